"""Runs in the worker: the legacy chat protocol, `chat/ask` and its pushes (protocol §5.3).

`chat/ask` is accepted at once, then `chat/answer` deltas and `chat/finish` arrive as pushes
for the ask's requestId; one ask is in flight per connection (§11.7, the connection's
`ask_slot`). `overwrite: true` replaces the answer so far; `isFiltered: true` ends it as a
content filter. A turn whose `chat/finish` never comes is ended by a short silence once answer
text has arrived (§5.3 "end-of-answer detection", fallback): the text is kept and the runtime
is told to stop.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import AsyncGenerator
from typing import Any

from worker.endings import end_from, error_detail, rpc_failure
from worker.routes import Subscription
from worker.rpc import RpcClosed, RpcConnection, RpcError, refused
from worker.upstream import (
    Ask,
    ConnectionLost,
    ContextUsage,
    End,
    Event,
    Overwrite,
    PushQueue,
    Text,
    Thought,
    Timers,
    TurnClock,
    int_or,
)

log = logging.getLogger(__name__)

IDLE_END_REASON = "idle"  # our End reason when silence, not chat/finish, closed a legacy turn
FILTERED_REASON = "content_filter"
ERROR_STATUSES = frozenset({"error", "failed", "fail"})


class LegacyFlow:
    name = "legacy"

    async def open_session(self, conn: RpcConnection, ask: Ask, timers: Timers) -> str:
        return str(uuid.uuid4())  # the runtime creates the session on first use of the id

    def subscribe(self, conn: RpcConnection, pushes: PushQueue, ask: Ask) -> Subscription:
        # The ask holds the connection, so a push naming no request can only be for it.
        return conn.routes.subscribe(
            pushes, request_id=ask.request_id, session_id=ask.session_id, unaddressed=True
        )

    def params(self, ask: Ask) -> dict[str, Any]:
        agent = ask.mode == "agent"
        return {
            "requestId": ask.request_id,
            "chatTask": "FREE_INPUT",
            "chatContext": None,
            "sessionId": ask.session_id,
            "codeLanguage": "",
            "isReply": ask.is_reply,
            "source": 1,
            "questionText": ask.question,
            "stream": True,
            "taskDefinitionType": "",
            "extra": {"modelConfig": {"key": ask.model_key}, "context": []},
            "sessionType": "assistant" if agent else "chat",
            "targetAgent": "",
            # Memory, project rules and the ask agent bloat prompts by tens of thousands of tokens.
            "pluginPayloadConfig": {
                "isEnableAutoMemory": False,
                "isEnableProjectRule": False,
                "isEnableAskAgent": False,
            },
            "mode": ask.mode,
            "shellType": "",
            "customModel": None,
        }

    async def stream(
        self, conn: RpcConnection, pushes: PushQueue, ask: Ask, timers: Timers
    ) -> AsyncGenerator[Event, None]:
        try:
            accepted = await conn.call("chat/ask", self.params(ask), timers.call_s)
        except RpcError as exc:
            raise rpc_failure(exc) from exc
        except RpcClosed as exc:
            raise ConnectionLost(f"Lingma connection lost before the answer: {exc}") from None
        _check_accepted(accepted)
        clock = TurnClock(timers)
        errors: list[str] = []  # error texts of step callbacks, for the finish's verdict
        while True:
            push = await pushes.next(clock.remaining())
            if push is None:
                if clock.ends_on_silence:
                    break
                raise clock.expired()
            method, params = push
            if not _mine(method, params, ask):
                continue
            if method == "chat/answer" and params.get("isFiltered") is True:
                log.warning("the runtime filtered the answer (isFiltered): ending it")
                yield await self._ended_early(conn, ask, timers, FILTERED_REASON, filtered=True)
                return
            event = _event(method, params, errors)
            if isinstance(event, End):
                yield event
                return
            _heard(clock, event)
            if event is not None:
                yield event
        # The answer came but its chat/finish did not: keep the text, and stop the runtime's
        # turn so this connection can serve the next ask.
        log.warning(
            "no chat/finish after a %.0fs silence: ending the answer", timers.legacy_idle_end_s
        )
        yield await self._ended_early(conn, ask, timers, IDLE_END_REASON)

    async def _ended_early(
        self, conn: RpcConnection, ask: Ask, timers: Timers, reason: str, *, filtered: bool = False
    ) -> End:
        with contextlib.suppress(RpcClosed, RpcError, TimeoutError):
            await self.stop(conn, ask, timers)
        return End(200, reason, filtered=filtered)

    async def stop(self, conn: RpcConnection, ask: Ask, timers: Timers) -> None:
        """`chat/stop` is a request (CW); its answer is not waited for beyond the settle time."""
        params = {"requestId": ask.request_id, "sessionId": ask.session_id}
        with contextlib.suppress(TimeoutError):
            await conn.call("chat/stop", params, timers.stop_settle_s)

    def ends_turn(self, method: str, params: dict[str, Any], ask: Ask) -> bool:
        return method == "chat/finish" and _mine(method, params, ask)


def _event(method: str, params: dict[str, Any], errors: list[str]) -> Event | None:
    if method == "chat/answer":
        text = str(params.get("text") or "")
        return Overwrite(text) if params.get("overwrite") is True else Text(text)
    if method == "chat/think":
        return Thought(str(params.get("text") or ""))
    if method == "context/usage/sync":
        return ContextUsage(int_or(params.get("usedTokens")), int_or(params.get("limitTokens")))
    if method == "chat/process_step_callback" and params.get("status") in ERROR_STATUSES:
        errors.append(error_detail(params) or f"step {params.get('step')} failed")
    if method == "chat/finish":
        return end_from(params, " ".join(errors))
    return None


def _heard(clock: TurnClock, event: Event | None) -> None:
    """Only this ask's own pushes reach here; text starts the short end-of-answer window."""
    if isinstance(event, Text | Overwrite) and event.text:
        if not clock.ends_on_silence:
            clock.idle_ends()
        clock.heard(output=True)
        return
    clock.heard(output=isinstance(event, Thought) and bool(event.text))


def _check_accepted(reply: Any) -> None:
    if not isinstance(reply, dict) or not refused(reply):
        return
    message = f"{reply.get('errorCode') or ''} {reply.get('errorMessage') or ''}".strip()
    raise rpc_failure(RpcError(0, message or "chat/ask refused", "chat/ask"))


ANSWER_METHODS = frozenset({"chat/answer", "chat/think", "chat/finish", "context/usage/sync"})


def _mine(method: str, params: dict[str, Any], ask: Ask) -> bool:
    """This ask's push: its requestId, else its sessionId; with neither, only an answer push
    counts (the ask holds the connection), never e.g. `snapshot/syncAll`, which would
    otherwise keep a stalled answer's silence from ever being noticed."""
    request_id = params.get("requestId")
    if request_id:
        return bool(request_id == ask.request_id)
    session_id = params.get("sessionId")
    if session_id:
        return bool(session_id == ask.session_id)
    return method in ANSWER_METHODS
