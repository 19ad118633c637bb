"""Runs in the emulator: the legacy chat flow — chat/ask and its pushes, chat/stop.

Push order per ask (lingma-protocol.md §5.3): process_step_callback step_start → step_end →
session/title/update → snapshot/syncAll → chat/answer deltas (some empty) →
context/usage/sync → chat/finish. `step_end` deliberately precedes the answer text, as in the
real runtime. Reasoning (THINK_STYLE=fence, the default) travels inside the answer text between
`\n````think::{THINK_TIME}\n` and `\n````\n` and is cut into deltas like any text, so a fence
may be split anywhere (§5.3). Who receives the pushes (broadcast) and under which request id
the answer goes (off-by-one): delivery.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

from emulator import tools
from emulator.connection import INVALID_PARAMS, ClientConnection, MethodError
from emulator.delivery import Attribution, attribution_for
from emulator.runtime import Method, Runtime, param_str, require_str, run_fault
from emulator.scripts import ScriptedAnswer, latest_user_turn
from emulator.sessions import ChatRecord
from emulator.settings import ThinkStyle
from emulator.turns import (
    CANCELLED_STATUS,
    Flow,
    Turn,
    TurnState,
    log_finish,
    paced_chunks,
    sleep_ms,
    usage_for,
)

log = logging.getLogger("lingma-emulator")

THINK_OPEN = "\n````think::{THINK_TIME}\n"
THINK_CLOSE = "\n````\n"


def model_key(params: dict[str, Any]) -> str:
    """`extra.modelConfig.key`, else `auto`."""
    extra = params.get("extra")
    config = extra.get("modelConfig") if isinstance(extra, dict) else None
    key = config.get("key") if isinstance(config, dict) else None
    return key if isinstance(key, str) and key else "auto"


def _refusal(code: str, message: str) -> dict[str, Any]:
    return {
        "requestId": "",
        "success": False,
        "errorCode": code,
        "errorMessage": message,
        "data": None,
    }


async def chat_ask(rt: Runtime, conn: ClientConnection, params: dict[str, Any]) -> Any:
    question = params.get("questionText")
    if not isinstance(question, str) or not question.strip():
        raise MethodError(INVALID_PARAMS, "questionText is empty")
    request_id = param_str(params, "requestId", default=uuid.uuid4().hex)
    session_id = param_str(params, "sessionId")
    model = model_key(params)
    mode = param_str(params, "mode", default="normal")
    refusal = _check_ask(rt, conn, model)
    rt.recorder.record(
        flow=Flow.LEGACY,
        session_id=session_id,
        mode=mode,
        model=model,
        text=question,
        request_id=request_id,
        accepted=refusal is None,
    )
    if refusal is not None:
        return refusal
    session_type = param_str(params, "sessionType", default="chat")
    first_in_session = False
    record: ChatRecord | None = None
    if session_id:
        session = rt.sessions.get_or_create(session_id)
        record = ChatRecord(request_id, latest_user_turn(question), session_type)
        first_in_session = rt.sessions.add_record(session, record)
    own = Attribution(request_id, session_id)
    turn = Turn(request_id, session_id, Flow.LEGACY, conn)
    rt.turns.add(turn)
    stream = LegacyStream(
        rt,
        turn,
        question=question,
        model=model,
        mode=mode,
        session_type=session_type,
        title=first_in_session,
        record=record,
        successor=rt.ask_chain.arrive(conn, own) if rt.knobs.off_by_one else None,
    )
    turn.task = conn.spawn(stream.run())
    log.debug(
        "EMULATOR doAsk SessionType: %s, model: %s; Async chat, request id: %s",
        session_type,
        model,
        request_id,
    )
    return {"requestId": "", "success": True, "errorCode": "", "errorMessage": "", "data": None}


def _check_ask(rt: Runtime, conn: ClientConnection, model: str) -> dict[str, Any] | None:
    if rt.user() is None:
        return _refusal("NOT_LOGIN", "user not login, please login first (lingma-emulator)")
    if not rt.catalog.knows(model):
        return _refusal("MODEL_NOT_FOUND", f"model config not found: {model}")
    if rt.knobs.one_ask_per_connection and rt.turns.busy(conn):
        return _refusal("CHAT_BUSY", "another chat is in progress on this connection")
    return None


class LegacyStream:
    """The pushes of one chat/ask, from step_start to chat/finish."""

    def __init__(
        self,
        rt: Runtime,
        turn: Turn,
        *,
        question: str,
        model: str,
        mode: str,
        session_type: str,
        title: bool,
        record: ChatRecord | None = None,
        successor: asyncio.Future[Attribution] | None = None,
    ) -> None:
        self.rt = rt
        self.turn = turn
        self.out = rt.audience(turn.conn)
        self.question = question
        self.model = model
        self.mode = mode
        self.session_type = session_type
        self.send_title = title
        self.record = record
        self.successor = successor  # off-by-one knob: resolved by the next chat/ask
        self.sent: list[str] = []
        self.base = {"requestId": turn.request_id, "sessionId": turn.session_id}

    async def run(self) -> None:
        try:
            await self._stream()
        except asyncio.CancelledError:
            if self.turn.state is not TurnState.STOPPED:
                raise
            await self._finish(reason="cancelled", status=CANCELLED_STATUS)
        finally:
            self.rt.turns.finish(self.turn)
            if self.successor is not None:
                self.rt.ask_chain.forget(self.turn.conn, self.successor)

    async def _stream(self) -> None:
        knobs = self.rt.knobs
        answer = self.rt.scripts.answer(
            self.question, self.model, reasoning=self.rt.catalog.is_reasoning(self.model)
        )
        acks = [await self._step("step_start")]
        if knobs.title_before_step_end:
            await self._title()
        acks.append(await self._step("step_end"))
        if not knobs.title_before_step_end:
            await self._title()
        await self.out.push("snapshot/syncAll", {})  # unrelated to the turn, seen during it (OC)
        await self._attribute(acks)
        await sleep_ms(knobs.first_token_ms + answer.delay_ms)
        text = answer.text
        if answer.thinking and knobs.think_style is ThinkStyle.FENCE:
            text = THINK_OPEN + answer.thinking + THINK_CLOSE + text
        else:
            await self._think_events(answer)
        await self._ide_tool(answer)
        first = True
        async for piece in paced_chunks(text, knobs, answer.chunk_delay_ms):
            await self._answer(piece)
            if first:
                await self._answer("")  # the real runtime interleaves empty deltas
                first = False
        if answer.overwrite is not None:
            await self._answer(answer.overwrite, overwrite=True)
        if answer.filtered:
            await self._answer("", filtered=True)
        if answer.action is not None:
            await run_fault(self.rt, self.turn.conn, answer.action)
        if answer.error is not None:
            await self._finish(reason=answer.error.message or "error", status=answer.error.status)
        else:
            await self._finish(reason="success", status=200)

    async def _attribute(self, acks: list[asyncio.Future[None] | None]) -> None:
        """Off-by-one knob: an answer whose step pushes went unacked goes to the next ask."""
        own = Attribution(self.turn.request_id, self.turn.session_id)
        wait_s = self.rt.knobs.off_by_one_ack_ms / 1000
        target = await attribution_for(own, self.successor, acks, wait_s)
        self.base = {"requestId": target.request_id, "sessionId": target.session_id}

    async def _ide_tool(self, answer: ScriptedAnswer) -> None:
        """Tools module: an IDE tool the client must run, before the answer text (tools.py)."""
        spec = tools.wanted(self.rt.knobs, answer, self.mode)
        if spec is not None:
            call = tools.IdeCall.start(spec, self.base)
            await tools.legacy_round(self.rt, self.turn, call, say=self._answer, push=self.out.push)

    async def _step(self, step: str) -> asyncio.Future[None] | None:
        params = {
            **self.base,
            "step": step,
            "status": "done",
            "description": "",
            "result": None,
            "message": "",
        }
        tracked = self.successor is not None
        return await self.out.push("chat/process_step_callback", params, track_ack=tracked)

    async def _title(self) -> None:
        if not self.send_title:
            return
        session = self.rt.sessions.get(self.turn.session_id)
        title = session.title if session else ""
        await self.out.push(
            "session/title/update", {"sessionId": self.turn.session_id, "sessionTitle": title}
        )

    async def _answer(self, text: str, *, overwrite: bool = False, filtered: bool = False) -> None:
        if overwrite:
            self.sent.clear()
        self.sent.append(text)
        params = {
            **self.base,
            "text": text,
            "overwrite": overwrite,
            "isFiltered": filtered,
            "timestamp": int(time.time() * 1000),
            "extra": {"sessionType": self.session_type},
        }
        await self.out.push("chat/answer", params)

    async def _think_events(self, answer: ScriptedAnswer) -> None:
        """THINK_STYLE=event: reasoning as `chat/think` pushes (the JetBrains plugin class)."""
        if not answer.thinking:
            return
        async for piece in paced_chunks(answer.thinking, self.rt.knobs):
            await self._think(piece, "start")
        await self._think("", "done")

    async def _think(self, text: str, step: str) -> None:
        params = {**self.base, "text": text, "step": step, "timestamp": int(time.time() * 1000)}
        await self.out.push("chat/think", params)

    async def _finish(self, *, reason: str, status: int) -> None:
        full = "".join(self.sent)
        if self.record is not None:
            self.record.answer = full
        usage = usage_for(self.question, full)
        await self.out.push(
            "context/usage/sync",
            {
                **self.base,
                "usedTokens": usage.total_tokens,
                "limitTokens": self.rt.knobs.limit_tokens,
            },
        )
        extra = {"sessionType": self.session_type, "modelKey": self.model, "usage": usage.as_wire()}
        finish = {
            **self.base,
            "reason": reason,
            "statusCode": status,
            "fullAnswer": full,
            "extra": extra,
        }
        await self.out.push("chat/finish", finish)
        log_finish(Flow.LEGACY, self.turn.request_id, status, usage)


async def chat_stop(rt: Runtime, conn: ClientConnection, params: dict[str, Any]) -> Any:
    """Ends the turn with chat/finish reason `cancelled` (a non-200 status)."""
    rt.turns.stop_request(require_str(params, "requestId"))
    return {}


async def chat_stop_session(rt: Runtime, conn: ClientConnection, params: dict[str, Any]) -> Any:
    rt.turns.stop_session(require_str(params, "sessionId"))
    return {}


METHODS: dict[str, Method] = {
    "chat/ask": Method(chat_ask, "definition.AskParams"),
    "chat/stop": Method(chat_stop, "definition.StopParams"),
    "chat/stopSession": Method(chat_stop_session, "definition.StopSessionParams"),
}
