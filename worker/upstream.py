"""Runs in the worker: what an upstream chat turn yields, and how its ending maps to errors.

Both chat flows (worker/flows.py) turn the runtime's pushes into the same small events: text,
thought, native tool call, context usage, end-of-turn. A non-200 end or an error answer becomes
an `UpstreamFailure` with the protocol ErrorCode the front renders (lingma-protocol.md §10).
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any

from protocol.inbox import Inbox
from protocol.messages import ErrorCode
from worker.rpc import CLOSED_PUSH, RpcConnection, RpcError

PROMPT_DONE = "$/prompt-done"
STOP_SETTLE_S = 2.0


@dataclass(frozen=True)
class Ask:
    request_id: str
    session_id: str
    question: str
    model_key: str
    mode: str  # chat | agent (the reference gateway's ask modes)
    is_reply: bool
    cwd: str


@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class Thought:
    text: str


@dataclass(frozen=True)
class NativeTool:
    call_id: str
    name: str
    arguments_json: str


@dataclass(frozen=True)
class Usage:
    used_tokens: int
    limit_tokens: int


@dataclass(frozen=True)
class End:
    status_code: int
    reason: str
    full_answer: str = ""
    retry_after: float | None = None


Event = Text | Thought | NativeTool | Usage | End


class UpstreamFailure(Exception):
    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        session_rejected: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.session_rejected = session_rejected
        self.retry_after = retry_after


class NoAcp(Exception):
    """`session/new` is not implemented by this runtime (the VS Code extension build)."""


def new_request_id() -> str:
    return uuid.uuid4().hex


def rpc_failure(exc: RpcError) -> UpstreamFailure:
    """Classify an error answer: a lost login, a session the runtime no longer knows, or other."""
    text = exc.message.lower()
    if "login" in text or "not logged" in text or "unauthor" in text:
        return UpstreamFailure(ErrorCode.NOT_LOGGED_IN, f"Lingma is not logged in: {exc.message}")
    rejected = "session" in text and ("not found" in text or "unknown" in text or "invalid" in text)
    return UpstreamFailure(ErrorCode.UPSTREAM_ERROR, str(exc), session_rejected=rejected)


class PushQueue:
    """Collects one connection's pushes for the chat that leases it."""

    def __init__(self, connection: RpcConnection) -> None:
        self._inbox: Inbox[tuple[str, dict[str, Any]]] = Inbox()
        connection.on_push = self.put

    def put(self, method: str, params: dict[str, Any]) -> None:
        self._inbox.put((method, params))

    async def next(self, silence_s: float) -> tuple[str, dict[str, Any]]:
        if self._inbox:  # a burst of pushes: no silence to time, no timer to arm
            method, params = self._inbox.get_nowait()
        else:
            method, params = await self._wait(silence_s)
        if method == CLOSED_PUSH:
            raise UpstreamFailure(ErrorCode.UPSTREAM_ERROR, "Lingma connection lost mid-answer")
        return method, params

    async def _wait(self, silence_s: float) -> tuple[str, dict[str, Any]]:
        # asyncio.timeout, not wait_for: 3.11's wait_for drops a cancellation that races with
        # an arriving push, and then a cancelled chat keeps waiting for its answer.
        try:
            async with asyncio.timeout(silence_s):
                return await self._inbox.get()
        except TimeoutError:
            raise UpstreamFailure(
                ErrorCode.UPSTREAM_TIMEOUT, f"Lingma sent nothing for {silence_s:.0f}s"
            ) from None


def int_or(value: Any, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: JSON's 1e999 is inf
        return default


def _retry_after(data: dict[str, Any]) -> float | None:
    for source in (data, data.get("extra") if isinstance(data.get("extra"), dict) else {}):
        assert isinstance(source, dict)
        for name in ("retryAfter", "retry_after", "retryAfterSeconds"):
            value = source.get(name)
            if isinstance(value, int | float) and value > 0:
                return float(value)
    return None


def end_from(data: dict[str, Any]) -> End:
    """A `chat/finish` (or ACP `chat_finish` data) as an End; a missing code means success."""
    reason = str(data.get("reason") or "")
    code = int_or(data.get("statusCode"), 0)
    if not code:
        code = 500 if reason.lower() in {"error", "failed"} else 200
    answer = data.get("fullAnswer")
    return End(code, reason, answer if isinstance(answer, str) else "", _retry_after(data))


def check_end(end: End) -> None:
    """Raise the UpstreamFailure a non-200 finish stands for (lingma-protocol.md §10)."""
    if end.status_code == 200:
        return
    detail = f"Lingma finished with status {end.status_code}: {end.reason or 'no reason given'}"
    codes = {
        429: ErrorCode.UPSTREAM_RATE_LIMITED,
        408: ErrorCode.UPSTREAM_TIMEOUT,
        401: ErrorCode.NOT_LOGGED_IN,
    }
    code = codes.get(end.status_code, ErrorCode.UPSTREAM_ERROR)
    raise UpstreamFailure(code, detail, retry_after=end.retry_after)
