"""Auth rules and error shapes: key scopes, admin token (refuses when unset), metrics access.

Named keys (lookup, expiry, limits) are tested in test_front_keys.py.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import pytest

from front.auth import (
    ANONYMOUS_SCOPE,
    key_scope,
    matches_any,
    require_admin,
    require_metrics,
)
from front.errors import ApiError, ApiFlavor, ErrorKind, error_body, flavor_for_path, from_failure
from front.keys import KeyTable
from protocol.chat import Failure
from protocol.keys import KeyEntry, KeySource, secret_digest
from protocol.vocabulary import ErrorCode

pytestmark = pytest.mark.unit

KEYS = KeyTable(
    [
        KeyEntry(name=f"k{i}", sha256=secret_digest(k), source=KeySource.API_KEYS, slot=i)
        for i, k in enumerate(["sk-one", "sk-two"])
    ]
)


def authenticate(headers: Mapping[str, str]) -> object:
    return KEYS.authenticate(headers, 0.0)


def test_key_scope_is_stable_and_opaque() -> None:
    assert key_scope("") == ANONYMOUS_SCOPE
    assert key_scope("sk-one") != key_scope("sk-two") and "sk" not in key_scope("sk-one")


def test_matches_any_checks_every_key() -> None:
    assert (
        matches_any("b", ["a", "b"])
        and not matches_any("c", ["a", "b"])
        and not matches_any("", [])
    )


def test_admin_refuses_when_unset_and_checks_token() -> None:
    with pytest.raises(ApiError) as info:
        require_admin({"authorization": "Bearer anything"}, "")
    assert info.value.status == 403
    for headers in ({}, {"x-admin-token": "wrong"}):
        with pytest.raises(ApiError) as info:
            require_admin(headers, "adm")
        assert info.value.status == 401
    require_admin({"x-admin-token": "adm"}, "adm")
    require_admin({"authorization": "Bearer adm"}, "adm")


def test_metrics_access_rules() -> None:
    check = authenticate
    require_metrics({}, authenticate=check, metrics_token="", public=True)
    require_metrics(
        {"authorization": "Bearer mt"}, authenticate=check, metrics_token="mt", public=False
    )
    with pytest.raises(ApiError):
        require_metrics(
            {"authorization": "Bearer sk-one"}, authenticate=check, metrics_token="mt", public=False
        )
    require_metrics(
        {"authorization": "Bearer sk-one"}, authenticate=check, metrics_token="", public=False
    )
    with pytest.raises(ApiError):
        require_metrics({}, authenticate=check, metrics_token="", public=False)


def test_error_shapes() -> None:
    err = ApiError(ErrorKind.UNAUTHORIZED, "invalid API key")
    assert json.loads(error_body(ApiFlavor.ANTHROPIC, err)) == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "invalid API key"},
    }
    body = json.loads(error_body(ApiFlavor.OPENAI, err))["error"]
    assert body["code"] == "invalid_api_key" and body["message"] == "invalid API key"
    assert flavor_for_path("/v1/messages/count_tokens") is ApiFlavor.ANTHROPIC
    assert flavor_for_path("/responses") is ApiFlavor.RESPONSES


@pytest.mark.parametrize(
    ("code", "status", "retry"),
    [
        (ErrorCode.UPSTREAM_RATE_LIMITED, 429, "30"),
        (ErrorCode.UNAVAILABLE, 503, "5"),
        (ErrorCode.UPSTREAM_ERROR, 502, None),
        (ErrorCode.DEADLINE_EXCEEDED, 504, None),
        (ErrorCode.UNKNOWN_MODEL, 404, None),
        (ErrorCode.BAD_REQUEST, 400, None),
    ],
)
def test_failure_mapping(code: ErrorCode, status: int, retry: str | None) -> None:
    err = from_failure(Failure(id=1, code=code, message="m"))
    assert err.status == status
    assert err.headers().get("Retry-After") == retry


def test_internal_failures_hide_details() -> None:
    err = from_failure(Failure(id=1, code=ErrorCode.INTERNAL, message="Traceback: secret path"))
    assert "Traceback" not in err.message and err.status == 500
