"""Runs in the front: API-key, admin-token and metrics-token checks (constant time, never logged).

Rules kept from the reference gateway: an empty key list means open (with a loud warning at
startup); `/v1/*` accepts `Authorization: Bearer` or `x-api-key`; `/metrics` is open when
METRICS_PUBLIC, else wants METRICS_TOKEN when one is set, else an API key. One deliberate
change: admin endpoints refuse (403) when ADMIN_TOKEN is unset instead of reusing API keys.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Callable, Mapping, Sequence

from front.errors import ApiError, ErrorKind

log = logging.getLogger(__name__)

ANONYMOUS_SCOPE = "anonymous"


def _raw(text: str) -> bytes:
    """Any str as bytes: header values that are not UTF-8 arrive with lone surrogates."""
    return text.encode("utf-8", "surrogatepass")


def bearer_token(headers: Mapping[str, str]) -> str:
    value = headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer":
        return ""
    return token.strip()


def presented_key(headers: Mapping[str, str]) -> str:
    """The key a client sent: `x-api-key` (Anthropic style) first, else the bearer token."""
    return headers.get("x-api-key", "").strip() or bearer_token(headers)


def matches_any(candidate: str, secrets: Sequence[str]) -> bool:
    """Constant-time over every configured secret: timing reveals neither which nor how close."""
    given = _raw(candidate)
    found = False
    for secret in secrets:
        found |= hmac.compare_digest(given, _raw(secret))
    return found


def key_scope(key: str) -> str:
    """A stable, non-reversible name for a key: session-cache and affinity partitions."""
    if not key:
        return ANONYMOUS_SCOPE
    return hashlib.sha256(b"lingma-gw-key\0" + _raw(key)).hexdigest()[:16]


def require_admin(headers: Mapping[str, str], admin_token: str) -> None:
    if not admin_token:
        raise ApiError(ErrorKind.FORBIDDEN, "admin endpoints are disabled: ADMIN_TOKEN is not set")
    token = headers.get("x-admin-token", "").strip() or bearer_token(headers)
    if not token:
        raise ApiError(ErrorKind.UNAUTHORIZED, "missing admin token")
    if not matches_any(token, [admin_token]):
        raise ApiError(ErrorKind.UNAUTHORIZED, "invalid admin token")


def require_metrics(
    headers: Mapping[str, str],
    *,
    authenticate: Callable[[Mapping[str, str]], object],
    metrics_token: str,
    public: bool,
) -> None:
    """Open when public; else the metrics token when one is set; else any valid API key."""
    if public:
        return
    if metrics_token:
        if not matches_any(bearer_token(headers), [metrics_token]):
            raise ApiError(ErrorKind.UNAUTHORIZED, "invalid or missing metrics token")
        return
    authenticate(headers)


def log_auth_posture(*, keys: int, admin_token: str, metrics_public: bool) -> None:
    """Loud warnings for risky settings, so an operator cannot miss them in the journal."""
    if not keys:
        log.warning(
            "AUTH DISABLED: no API key is configured, /v1/* is wide open. "
            "Set API_KEYS before exposing this gateway to anything other than localhost."
        )
    if not admin_token:
        log.warning(
            "ADMIN_TOKEN not set: /internal/* admin endpoints are disabled (they answer 403). "
            "Set a dedicated ADMIN_TOKEN to use auto-login, session export and raw models."
        )
    if metrics_public:
        log.warning(
            "METRICS_PUBLIC=true: /metrics is open. Only enable this "
            "when the gateway is behind a private-network scraper."
        )
