"""Unit: cloud errors (§14.10) map to the gateway's codes; Retry-After and wrong domains."""

from __future__ import annotations

import pytest

from protocol.vocabulary import ErrorCode
from worker.cloud.errors import FailureKind, classify, failure_for, parse_retry_after

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("status", "body", "kind", "code"),
    [
        (
            403,
            '{"code":"101","message":"Signature invalid"}',
            FailureKind.AUTH,
            ErrorCode.NOT_LOGGED_IN,
        ),
        (
            403,
            '{"code":"105","message":"Login expired"}',
            FailureKind.AUTH,
            ErrorCode.NOT_LOGGED_IN,
        ),
        (403, "Request discarded", FailureKind.AUTH, ErrorCode.NOT_LOGGED_IN),
        (401, "", FailureKind.AUTH, ErrorCode.NOT_LOGGED_IN),
        (
            403,
            '{"code":"110","message":"quota"}',
            FailureKind.RATE_LIMITED,
            ErrorCode.UPSTREAM_RATE_LIMITED,
        ),
        (
            200,
            '{"code":"10605","isQueued":true}',
            FailureKind.RATE_LIMITED,
            ErrorCode.UPSTREAM_RATE_LIMITED,
        ),
        (429, "", FailureKind.RATE_LIMITED, ErrorCode.UPSTREAM_RATE_LIMITED),
        (404, "", FailureKind.WRONG_DOMAIN, ErrorCode.UPSTREAM_ERROR),
        (
            200,
            "<Error><Code>NoSuchKey</Code></Error>",
            FailureKind.WRONG_DOMAIN,
            ErrorCode.UPSTREAM_ERROR,
        ),
        (500, '{"code":"500"}', FailureKind.SERVER, ErrorCode.UPSTREAM_ERROR),
        (408, "", FailureKind.TIMEOUT, ErrorCode.UPSTREAM_TIMEOUT),
        (400, '{"message":"bad"}', FailureKind.REJECTED, ErrorCode.UPSTREAM_ERROR),
    ],
)
def test_classification(status: int, body: str, kind: FailureKind, code: ErrorCode) -> None:
    failure = classify(status, body)
    assert failure.kind is kind and failure.error_code is code
    assert str(status) in failure.message


def test_wrong_domain_message_and_retry_rules() -> None:
    failure = classify(404, "")
    assert "cloud_base_url" in failure.message and failure.may_succeed_elsewhere
    assert not classify(403, '{"code":"105"}').may_succeed_elsewhere
    assert not classify(429, "").may_succeed_elsewhere  # the relay handles 429 on its own
    inband = failure_for(429, "429", "Too many requests", where="chat stream")
    assert inband.kind is FailureKind.RATE_LIMITED and "Too many requests" in inband.message


def test_retry_after() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
    assert parse_retry_after("999999") == 3600.0
