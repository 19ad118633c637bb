"""Runs in the front: the one client-facing error type and its body in each API's own shape.

Every failure a client can see becomes an `ApiError` of one `ErrorKind`; the kind fixes the
HTTP status (DESIGN.md's table) and the type/code strings each API's SDKs look for.
"""

from __future__ import annotations

import enum
import math
from typing import Any

import msgspec

from protocol.chat import Failure
from protocol.vocabulary import ErrorCode

_json = msgspec.json.Encoder()


class ApiFlavor(enum.StrEnum):
    """Which wire format a request speaks: decides error bodies and stream error events."""

    OPENAI = "openai"
    RESPONSES = "responses"
    ANTHROPIC = "anthropic"


class ErrorKind(enum.Enum):
    # value: (status, openai type, openai code, anthropic type)
    BAD_REQUEST = (400, "invalid_request_error", "invalid_request", "invalid_request_error")
    UNAUTHORIZED = (401, "invalid_request_error", "invalid_api_key", "authentication_error")
    FORBIDDEN = (403, "permission_error", "forbidden", "permission_error")
    NOT_FOUND = (404, "invalid_request_error", "not_found", "not_found_error")
    MODEL_NOT_FOUND = (404, "invalid_request_error", "model_not_found", "not_found_error")
    METHOD_NOT_ALLOWED = (
        405,
        "invalid_request_error",
        "method_not_allowed",
        "invalid_request_error",
    )
    CONFLICT = (409, "invalid_request_error", "conflict", "invalid_request_error")
    REQUEST_TIMEOUT = (408, "invalid_request_error", "request_timeout", "invalid_request_error")
    TOO_LARGE = (413, "invalid_request_error", "request_too_large", "request_too_large")
    OVERLOADED = (429, "rate_limit_error", "overloaded", "rate_limit_error")
    UPSTREAM_RATE_LIMITED = (429, "rate_limit_error", "upstream_rate_limited", "rate_limit_error")
    # A named key over its own rpm / tokens-per-day / concurrency limit (front/keys.py).
    KEY_LIMITED = (429, "rate_limit_error", "rate_limit_exceeded", "rate_limit_error")
    INTERNAL = (500, "server_error", "internal_error", "api_error")
    UPSTREAM = (502, "upstream_error", "upstream_error", "api_error")
    UNAVAILABLE = (503, "service_unavailable", "no_ready_account", "overloaded_error")
    TIMEOUT = (504, "timeout", "deadline_exceeded", "timeout_error")

    @property
    def status(self) -> int:
        return int(self.value[0])


class ApiError(Exception):
    """A failure with a status, a safe message and (for 429/503) a Retry-After hint."""

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        retry_after: float | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.retry_after = retry_after
        self.param = param

    @property
    def status(self) -> int:
        return self.kind.status

    def headers(self) -> dict[str, str]:
        if self.retry_after is None:
            return {}
        return {"Retry-After": str(max(1, math.ceil(self.retry_after)))}


_FAILURE_KINDS: dict[ErrorCode, ErrorKind] = {
    ErrorCode.BAD_REQUEST: ErrorKind.BAD_REQUEST,
    ErrorCode.UNKNOWN_MODEL: ErrorKind.MODEL_NOT_FOUND,
    ErrorCode.NOT_FOUND: ErrorKind.NOT_FOUND,
    ErrorCode.NOT_LOGGED_IN: ErrorKind.UNAVAILABLE,
    ErrorCode.UNAVAILABLE: ErrorKind.UNAVAILABLE,
    ErrorCode.OVERLOADED: ErrorKind.OVERLOADED,
    ErrorCode.UPSTREAM_RATE_LIMITED: ErrorKind.UPSTREAM_RATE_LIMITED,
    ErrorCode.UPSTREAM_ERROR: ErrorKind.UPSTREAM,
    ErrorCode.UPSTREAM_TIMEOUT: ErrorKind.TIMEOUT,
    ErrorCode.DEADLINE_EXCEEDED: ErrorKind.TIMEOUT,
    ErrorCode.CANCELLED: ErrorKind.UPSTREAM,
    ErrorCode.BAD_FRAME: ErrorKind.INTERNAL,
    ErrorCode.UNSUPPORTED: ErrorKind.BAD_REQUEST,
    ErrorCode.INTERNAL: ErrorKind.INTERNAL,
}

# Retry-After defaults when the worker gave none: a short wait for "no account ready".
DEFAULT_RETRY_AFTER: dict[ErrorKind, float] = {
    ErrorKind.OVERLOADED: 1.0,
    ErrorKind.UPSTREAM_RATE_LIMITED: 30.0,
    ErrorKind.UNAVAILABLE: 5.0,
}


def from_failure(failure: Failure) -> ApiError:
    kind = _FAILURE_KINDS.get(failure.code, ErrorKind.UPSTREAM)
    message = failure.message
    if kind is ErrorKind.INTERNAL:
        message = "internal error in the gateway"  # details stay in the worker's log
    retry_after = failure.retry_after
    if retry_after is None:
        retry_after = DEFAULT_RETRY_AFTER.get(kind)
    return ApiError(kind, message, retry_after=retry_after)


def no_ready_account_message(detail: str = "", action: str = "serve this request") -> str:
    """For the operator as much as the caller: what is wrong and where to look."""
    because = f" ({detail})" if detail else ""
    return (
        f"no READY account can {action}{because}: accounts may still be logging in, "
        "logged out, restarting or FATAL; run `lingma-gw status` on the gateway host, and "
        "`lingma-gw login NAME` for an account that is not logged in"
    )


def openai_error_payload(err: ApiError) -> dict[str, Any]:
    _, err_type, code, _ = err.kind.value
    return {"error": {"message": err.message, "type": err_type, "param": err.param, "code": code}}


def anthropic_error_payload(err: ApiError) -> dict[str, Any]:
    return {"type": "error", "error": {"type": err.kind.value[3], "message": err.message}}


def error_body(flavor: ApiFlavor, err: ApiError) -> bytes:
    if flavor is ApiFlavor.ANTHROPIC:
        return _json.encode(anthropic_error_payload(err))
    return _json.encode(openai_error_payload(err))


def any_api_error_body(err: ApiError, *, code: str) -> bytes:
    """For a request whose API cannot be told: a body both the OpenAI and Anthropic SDKs read."""
    error = {"type": err.kind.value[3], "message": err.message, "param": None, "code": code}
    return _json.encode({"type": "error", "error": error})


def flavor_for_path(path: str) -> ApiFlavor:
    """Errors raised before a handler runs (404, 405, 413, auth) still speak the path's API."""
    if path.startswith("/v1/messages"):
        return ApiFlavor.ANTHROPIC
    if path in ("/v1/responses", "/responses"):
        return ApiFlavor.RESPONSES
    return ApiFlavor.OPENAI
