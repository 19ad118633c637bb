"""Runs in the worker: how an upstream turn ended, read from whatever the runtime said.

Legacy `chat/finish` carries `statusCode` (200 = ok, lingma-protocol.md §5.3); ACP's
`chat_finish.data` is documented as `{reason, fullAnswer, …}` only (§5.4), and the wording of
rate limits, quota and lost logins is not documented at all (§10, §14.10). So a status code is
used when present, and otherwise the reason and any error text decide: rate-limit and quota
wording takes the 429 path (cooldown), login wording the logged-out path, timeouts 504, error
words 502. An unknown reason with no error word counts as success; an answer that is empty
anyway is caught by the chat service, never returned as an empty 200.
"""

from __future__ import annotations

import re
from typing import Any

from protocol.vocabulary import ErrorCode
from worker.rpc import RpcError
from worker.upstream import End, UpstreamFailure, int_or

OK = 200
CANCELLED = 499
SUCCESS_REASONS = frozenset(
    {"", "success", "succeeded", "ok", "stop", "end_turn", "max_tokens", "length"}
    | {"complete", "completed", "finish", "finished", "done", "normal"}
)
CANCEL_REASONS = frozenset({"cancel", "cancelled", "canceled", "stopped", "aborted", "abort"})

# Spec wordings (§10, §14.10): HTTP 429 / TOO_MANY_REQUESTS, Qoder's quota codes 110/112 and
# queueing 10605, `is_quota_exceeded`; logins: 101 Signature invalid, 105 Login expired,
# `403 User invalid`, "user not login" (the runtime's chat/ask refusal).
_RATE = re.compile(
    r"\b429\b|too[ _-]?many[ _-]?requests|rate[ _-]?limit|throttl|频繁|限流|"
    r"quota|额度|配额|credit|usage[ _-]limit|\bcode\W{0,3}(?:110|112|10605)\b|isqueued",
    re.IGNORECASE,
)
_LOGIN = re.compile(
    r"not[ _-]?log(?:ged)?[ _-]?in|login[ _-]?(?:expired|required)|please[ _-]?log[ _-]?in|"
    r"unauthori[sz]ed|user invalid|signature invalid|token (?:expired|invalid)|"
    r"\bcode\W{0,3}(?:101|105)\b|未登录|登录已过期",
    re.IGNORECASE,
)
_TIMEOUT = re.compile(r"time[ _-]?out|timed out|\b408\b|超时", re.IGNORECASE)
_ERROR = re.compile(
    r"error|fail|exception|invalid|denied|forbidden|refused|unavailable|\b5\d\d\b|错误|失败",
    re.IGNORECASE,
)


def wording(text: str) -> ErrorCode | None:
    """The failure a piece of runtime text names, if it names one we treat specially."""
    if _RATE.search(text):
        return ErrorCode.UPSTREAM_RATE_LIMITED
    if _LOGIN.search(text):
        return ErrorCode.NOT_LOGGED_IN
    if _TIMEOUT.search(text):
        return ErrorCode.UPSTREAM_TIMEOUT
    return None


def _status_from_words(reason: str, detail: str) -> int:
    if reason.strip().lower() in SUCCESS_REASONS and not detail:
        return OK
    if reason.strip().lower() in CANCEL_REASONS:
        return CANCELLED
    text = f"{reason} {detail}"
    named = wording(text)
    if named is ErrorCode.UPSTREAM_RATE_LIMITED:
        return 429
    if named is ErrorCode.NOT_LOGGED_IN:
        return 401
    if named is ErrorCode.UPSTREAM_TIMEOUT:
        return 408
    return 500 if _ERROR.search(text) else OK


def error_detail(data: dict[str, Any]) -> str:
    """Error text a finish (or an error notification) carries beside its `reason`."""
    parts = [
        str(data[key])
        for key in ("errorCode", "errorMessage", "error", "errorMsg", "message")
        if data.get(key) not in (None, "", 0)
    ]
    return " ".join(parts)


def _retry_after(data: dict[str, Any]) -> float | None:
    extra = data.get("extra")
    for source in (data, extra if isinstance(extra, dict) else {}):
        for name in ("retryAfter", "retry_after", "retryAfterSeconds"):
            value = source.get(name)
            if isinstance(value, int | float) and value > 0:
                return float(value)
    return None


def end_from(data: dict[str, Any], noted_errors: str = "") -> End:
    """A `chat/finish` (or ACP `chat_finish` data) as an End; `noted_errors`: error pushes seen.

    `statusCode` decides when present; without it the reason and error texts do.
    """
    reason = str(data.get("reason") or "")
    detail = " ".join(part for part in (error_detail(data), noted_errors) if part)
    code = int_or(data.get("statusCode"), 0)
    if not code:
        code = _status_from_words(reason, detail)
    answer = data.get("fullAnswer")
    shown = reason if not detail else f"{reason}: {detail}" if reason else detail
    return End(code, shown, answer if isinstance(answer, str) else "", _retry_after(data))


def failure_code(status: int, text: str) -> ErrorCode:
    if status == 429:
        return ErrorCode.UPSTREAM_RATE_LIMITED
    if status == 408:
        return ErrorCode.UPSTREAM_TIMEOUT
    named = wording(text)
    if named is not None:
        return named
    if status in (401, 403):
        return ErrorCode.NOT_LOGGED_IN
    return ErrorCode.UPSTREAM_ERROR


def check_end(end: End) -> None:
    """Raise the UpstreamFailure a non-200 end stands for (lingma-protocol.md §10)."""
    if end.status_code == OK:
        return
    detail = f"Lingma ended the answer with status {end.status_code}: {end.reason or 'no reason'}"
    code = failure_code(end.status_code, end.reason)
    raise UpstreamFailure(code, detail, retry_after=end.retry_after)


def rpc_failure(exc: RpcError) -> UpstreamFailure:
    """Classify an error answer: a lost login, a rate limit, a forgotten session, or other."""
    code = wording(exc.message) or ErrorCode.UPSTREAM_ERROR
    if code is ErrorCode.NOT_LOGGED_IN:
        return UpstreamFailure(code, f"Lingma is not logged in: {exc.message}")
    text = exc.message.lower()
    rejected = "session" in text and ("not found" in text or "unknown" in text or "invalid" in text)
    return UpstreamFailure(code, str(exc), session_rejected=rejected)
