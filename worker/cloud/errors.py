"""Runs in the worker: what a cloud error means, and which gateway error it becomes (§14.10).

HTTP statuses and in-band envelopes are classified alike. The wire vocabulary is only partly
known (§14.14), so the rules read both the status and the body code: 101/105/403 bodies and
HTTP 401/403 are the login; 429, Qoder's quota codes 110/112 and queueing 10605 are rate
limits; 404 or an OSS `NoSuchKey` body means the base URL is wrong; 5xx, a cut stream and an
empty answer may succeed on another account. Messages are truncated and hold no secrets.
"""

from __future__ import annotations

import email.utils
import enum
import time

from protocol.vocabulary import ErrorCode
from worker.cloud.sse import error_details

AUTH_CODES = frozenset({"101", "105", "403", "401"})
QUOTA_CODES = frozenset({"110", "112", "10605", "429"})
MAX_RETRY_AFTER_S = 3600.0


class FailureKind(enum.Enum):
    AUTH = "auth"  # bad signature, expired or rejected login
    RATE_LIMITED = "rate_limited"  # 429, quota, queueing
    WRONG_DOMAIN = "wrong_domain"  # 404 / NoSuchKey: not a Lingma cloud base URL
    SERVER = "server"  # 5xx
    CUT = "cut"  # the stream ended without a finish, or the connection broke
    EMPTY = "empty"  # a finished answer with no text and no tool call
    TIMEOUT = "timeout"  # nothing arrived within the silence limit (or HTTP 408)
    REJECTED = "rejected"  # any other 4xx: the cloud refused this request as sent


class CloudFailure(Exception):
    def __init__(
        self,
        kind: FailureKind,
        message: str,
        *,
        status: int = 0,
        code: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status
        self.code = code
        self.retry_after = retry_after

    @property
    def error_code(self) -> ErrorCode:
        return {
            FailureKind.AUTH: ErrorCode.NOT_LOGGED_IN,
            FailureKind.RATE_LIMITED: ErrorCode.UPSTREAM_RATE_LIMITED,
            FailureKind.TIMEOUT: ErrorCode.UPSTREAM_TIMEOUT,
        }.get(self.kind, ErrorCode.UPSTREAM_ERROR)

    @property
    def may_succeed_elsewhere(self) -> bool:
        """Worth another attempt (here once, or on another account) if nothing was sent yet."""
        return self.kind in (
            FailureKind.SERVER,
            FailureKind.CUT,
            FailureKind.EMPTY,
            FailureKind.WRONG_DOMAIN,
            FailureKind.TIMEOUT,
        )


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """`Retry-After` as delta-seconds or an HTTP date; None when absent or unusable."""
    if not value or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return min(float(text), MAX_RETRY_AFTER_S)
    try:
        when = email.utils.parsedate_to_datetime(text).timestamp()
    except (TypeError, ValueError):
        return None
    wait = when - (time.time() if now is None else now)
    return min(max(wait, 0.0), MAX_RETRY_AFTER_S)


def classify(
    status: int, body: str, *, retry_after: float | None = None, where: str = "chat"
) -> CloudFailure:
    """One failure from an HTTP status and its body."""
    code, message = error_details(body, f"HTTP {status}")
    return failure_for(status, code, message, retry_after=retry_after, where=where, raw=body)


def failure_for(
    status: int,
    code: str,
    message: str,
    *,
    retry_after: float | None = None,
    where: str = "chat",
    raw: str = "",
) -> CloudFailure:
    """One failure from a status (HTTP or in-band `statusCodeValue`), a body code and text."""
    detail = f"cloud {where} answered {status}" + (f" code {code}" if code else "")
    detail += f": {message}" if message else ""
    kind = _kind(status, code, raw or message)
    if kind is FailureKind.WRONG_DOMAIN:
        detail += (
            " - the base URL is probably not Lingma's cloud API (set cloud_base_url to the "
            "official or your enterprise dedicated domain)"
        )
    return CloudFailure(kind, detail, status=status, code=code, retry_after=retry_after)


def _kind(status: int, code: str, body: str) -> FailureKind:
    if status == 429 or code in QUOTA_CODES:
        return FailureKind.RATE_LIMITED
    if status in (401, 403) or code in AUTH_CODES:
        return FailureKind.AUTH
    if status == 404 or "NoSuchKey" in body:
        return FailureKind.WRONG_DOMAIN
    if status == 408:
        return FailureKind.TIMEOUT
    if status >= 500:
        return FailureKind.SERVER
    return FailureKind.REJECTED
