"""Runs in the emulator: the ACP-like flow — session/new, set_model, prompt, cancel, load.

`session/update` events are notifications carrying `_meta["ai-coding/request-id"]`; the turn
ends with `notification/chat_finish` whose data is `{reason, fullAnswer}` as §5.4 documents it
(`statusCode` only with ACP_FINISH_STATUS), `fullAnswer` empty by default, so clients must
rebuild the answer from the chunks (lingma-protocol.md §5.4, §12.7). An error finish words its
status in `reason` ("429 Too Many Requests: ..."). `ai-coding/mode` is `agent` or absent, as
public clients send it; another value is refused. `session/load` replays a stored session,
turn by turn, as `user_message_chunk` / `agent_message_chunk` updates to the caller only (each
tagged with the turn's request id), then answers `{}`. Image prompt items are read from the
files they name (images.py) and the default reply says what arrived.
"""

from __future__ import annotations

import asyncio
import http
import logging
import time
import uuid
from collections.abc import Sequence
from typing import Any

from emulator import tools
from emulator.connection import INVALID_PARAMS, NO_REPLY, ClientConnection, MethodError
from emulator.images import ReceivedImage, received_images
from emulator.runtime import NOT_LOGGED_IN, Method, Runtime, param_str, require_str, run_fault
from emulator.scripts import latest_user_turn
from emulator.sessions import ChatRecord, Session
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

REQUEST_ID_KEY = "ai-coding/request-id"
AVAILABLE_COMMANDS = [
    {"name": "init", "description": "Create a project rules file (emulated)", "input": None},
    {"name": "compact", "description": "Summarise the conversation (emulated)", "input": None},
]


def _session(rt: Runtime, params: dict[str, Any]) -> Session:
    session_id = require_str(params, "sessionId", "id")
    session = rt.sessions.get(session_id)
    if session is None:
        raise MethodError(INVALID_PARAMS, f"session not found: {session_id}")
    return session


async def session_new(rt: Runtime, conn: ClientConnection, params: dict[str, Any]) -> Any:
    if rt.knobs.session_new_hang:
        log.info("EMULATOR session/new left unanswered (SESSION_NEW_HANG)")
        return NO_REPLY
    if rt.knobs.session_new_error:
        raise MethodError(rt.knobs.session_new_error, "session/new failed (SESSION_NEW_ERROR)")
    session = rt.sessions.create(workspace=param_str(params, "cwd"))
    update = {"sessionUpdate": "available_commands_update", "availableCommands": AVAILABLE_COMMANDS}
    # Spawned, so it goes out after this method's response (the order the real runtime uses).
    params = {"sessionId": session.session_id, "update": update}
    conn.spawn(_notify_later(rt, conn, params))
    return {"sessionId": session.session_id}


async def _notify_later(rt: Runtime, conn: ClientConnection, params: dict[str, Any]) -> None:
    rt.audience(conn).notify("session/update", params)


async def session_load(rt: Runtime, conn: ClientConnection, params: dict[str, Any]) -> Any:
    """Replay every stored turn (question, then the answer streamed so far), then `{}`."""
    session = _session(rt, params)
    for record in session.records:
        _replay(conn, session.session_id, record.request_id, "user_message_chunk", record.question)
        if record.answer:
            _replay(
                conn, session.session_id, record.request_id, "agent_message_chunk", record.answer
            )
    log.debug("EMULATOR session/load %s: %d turns", session.session_id, len(session.records))
    return {}


def _replay(conn: ClientConnection, session_id: str, request_id: str, kind: str, text: str) -> None:
    update = {"sessionUpdate": kind, "content": {"type": "text", "text": text}}
    meta = {REQUEST_ID_KEY: request_id}
    conn.notify("session/update", {"sessionId": session_id, "_meta": meta, "update": update})


async def set_model(rt: Runtime, conn: ClientConnection, params: dict[str, Any]) -> Any:
    session = _session(rt, params)
    model = require_str(params, "modelId")
    if not rt.catalog.knows(model):
        raise MethodError(INVALID_PARAMS, f"model not found: {model}")
    session.model = model
    return {}


async def set_mode(rt: Runtime, conn: ClientConnection, params: dict[str, Any]) -> Any:
    session = _session(rt, params)
    session.mode = param_str(params, "modeId", "mode", default=session.mode)
    return {}


def _meta(params: dict[str, Any]) -> dict[str, Any]:
    meta = params.get("_meta")
    return meta if isinstance(meta, dict) else {}


def prompt_text(prompt: Any) -> str:
    """The text items of an ACP prompt, joined; images and resources are only acknowledged."""
    if not isinstance(prompt, list):
        raise MethodError(
            INVALID_PARAMS, "json: cannot unmarshal into field prompt of type []acp.ContentBlock"
        )
    texts = [
        item.get("text", "")
        for item in prompt
        if isinstance(item, dict) and item.get("type") == "text"
    ]
    return "\n".join(text for text in texts if isinstance(text, str))


async def session_prompt(rt: Runtime, conn: ClientConnection, params: dict[str, Any]) -> Any:
    session = _session(rt, params)
    meta = _meta(params)
    request_id = meta.get(REQUEST_ID_KEY)
    if not isinstance(request_id, str) or not request_id:
        raise MethodError(INVALID_PARAMS, "requestId is empty")
    text = prompt_text(params.get("prompt"))
    images = received_images(params.get("prompt"), rt.knobs.image_uri_scheme)
    model = param_str(meta, "ai-coding/model", default=session.model)
    sent_mode = param_str(meta, "ai-coding/mode")
    if sent_mode not in ("", "agent"):
        raise MethodError(INVALID_PARAMS, f"unknown ai-coding/mode: {sent_mode}")
    mode = sent_mode or session.mode  # absent: not agent mode (no IDE tools)
    logged_in = rt.user() is not None
    rt.recorder.record(
        flow=Flow.ACP,
        session_id=session.session_id,
        mode=sent_mode,
        model=model,
        text=text,
        request_id=request_id,
        accepted=logged_in and rt.catalog.knows(model),
        extra=_image_record(images, params.get("contextParams")),
    )
    if not logged_in:
        raise MethodError(NOT_LOGGED_IN, "user not login, please login first (lingma-emulator)")
    if not rt.catalog.knows(model):
        raise MethodError(INVALID_PARAMS, f"model not found: {model}")
    record = ChatRecord(request_id, latest_user_turn(text), "assistant")
    first = rt.sessions.add_record(session, record)
    turn = Turn(request_id, session.session_id, Flow.ACP, conn)
    rt.turns.add(turn)
    seen = [image.describe() for image in images]
    stream = AcpStream(rt, turn, text, model, mode=mode, title=first, record=record, images=seen)
    turn.task = conn.spawn(stream.run())
    log.debug("EMULATOR ACP prompt, model: %s, request id: %s", model, request_id)
    return None


def _image_record(images: list[ReceivedImage], context: Any) -> dict[str, Any] | None:
    if not images:
        return None
    mirrored = context if isinstance(context, list) else []
    return {"images": [image.record() for image in images], "context_params": len(mirrored)}


async def session_cancel(rt: Runtime, conn: ClientConnection, params: dict[str, Any]) -> Any:
    """Ends the current turn with chat_finish reason `cancelled` (usually a notification)."""
    meta = _meta(params)
    request_id = meta.get(REQUEST_ID_KEY)
    if isinstance(request_id, str) and request_id:
        rt.turns.stop_request(request_id)
    else:
        rt.turns.stop_session(require_str(params, "sessionId"))
    return NO_REPLY if rt.knobs.cancel_no_reply else {}


class AcpStream:
    """The events of one session/prompt, from step_start to notification/chat_finish."""

    def __init__(
        self,
        rt: Runtime,
        turn: Turn,
        text: str,
        model: str,
        *,
        mode: str,
        title: bool,
        record: ChatRecord,
        images: Sequence[str] = (),
    ) -> None:
        self.rt = rt
        self.turn = turn
        self.out = rt.audience(turn.conn)
        self.record = record
        self.text = text
        self.model = model
        self.mode = mode
        self.send_title = title
        self.sent: list[str] = []
        self.images = images  # what the prompt's image items held, for the reply to say

    async def run(self) -> None:
        try:
            await self._stream()
        except asyncio.CancelledError:
            if self.turn.state is not TurnState.STOPPED:
                raise
            self._finish(reason="cancelled", status=CANCELLED_STATUS)
        finally:
            self.rt.turns.finish(self.turn)

    async def _stream(self) -> None:
        knobs = self.rt.knobs
        conn = self.turn.conn
        answer = self.rt.scripts.answer(
            self.text,
            self.model,
            reasoning=self.rt.catalog.is_reasoning(self.model),
            images=self.images,
        )
        base = {"requestId": self.turn.request_id, "sessionId": self.turn.session_id}
        await self.out.push(
            "chat/process_step_callback", {**base, "step": "step_start", "status": "done"}
        )
        await self.out.push(
            "chat/process_step_callback", {**base, "step": "step_end", "status": "done"}
        )
        await self.out.push("snapshot/syncAll", {})  # unrelated to the turn, seen during it (OC)
        if self.send_title:
            session = self.rt.sessions.get(self.turn.session_id)
            title = session.title if session else ""
            await self.out.push(
                "session/title/update", {"sessionId": self.turn.session_id, "sessionTitle": title}
            )
        await sleep_ms(knobs.first_token_ms + answer.delay_ms)
        if answer.thinking:
            started = time.monotonic()
            async for piece in paced_chunks(answer.thinking, knobs):
                millis = int((time.monotonic() - started) * 1000)
                self._update(
                    "agent_thought_chunk", piece, {"ai-coding/thinking-duration-millis": millis}
                )
        spec = tools.wanted(knobs, answer, self.mode)
        if spec is not None:  # tools module: an IDE tool the client must run (tools.py)
            call = tools.IdeCall.start(spec, base)
            await tools.acp_round(self.rt, self.turn, call, say=self._say, update=self._notify)
        async for piece in paced_chunks(answer.text, knobs, answer.chunk_delay_ms):
            self.sent.append(piece)
            self._update("agent_message_chunk", piece)
        if answer.native_tool is not None:
            self._native_tool(answer.native_tool.name, answer.native_tool.arguments)
        if answer.action is not None:
            await run_fault(self.rt, conn, answer.action)
        if answer.error is not None:
            self._finish(
                reason=error_reason(answer.error.status, answer.error.message),
                status=answer.error.status,
            )
        else:
            self._finish(reason="success", status=200)

    def _say(self, text: str) -> None:
        self.sent.append(text)
        self._update("agent_message_chunk", text)

    def _notify(self, update: dict[str, Any]) -> None:
        params = {
            "sessionId": self.turn.session_id,
            "_meta": {REQUEST_ID_KEY: self.turn.request_id},
            "update": update,
        }
        self.out.notify("session/update", params)

    def _update(self, kind: str, text: str, meta: dict[str, Any] | None = None) -> None:
        update: dict[str, Any] = {"sessionUpdate": kind, "content": {"type": "text", "text": text}}
        if meta:
            update["_meta"] = meta
        self._notify(update)

    def _native_tool(self, name: str, arguments: dict[str, Any]) -> None:
        """The runtime's own tool card: announced, then reported finished (§5.4, §9.1)."""
        call_id = f"call_{uuid.uuid4().hex[:16]}"
        meta = {"ai-coding/tool-name": name, "ai-coding/tool-kind": "other"}
        self._notify(
            {
                "sessionUpdate": "tool_call",
                "toolCallId": call_id,
                "title": name,
                "kind": "other",
                "status": "pending",
                "rawInput": arguments,
                "_meta": meta,
            }
        )
        self._notify(
            {
                "sessionUpdate": "tool_call_update",
                "toolCallId": call_id,
                "status": "completed",
                "rawOutput": [],
                "_meta": meta,
            }
        )

    def _finish(self, *, reason: str, status: int) -> None:
        full = "".join(self.sent)
        self.record.answer = full
        usage = usage_for(self.text, full)
        used = {"usedTokens": usage.total_tokens, "limitTokens": self.rt.knobs.limit_tokens}
        self._notify({"sessionUpdate": "notification", "type": "context_usage", "data": used})
        data: dict[str, Any] = {
            "reason": reason,
            "fullAnswer": full if self.rt.knobs.acp_full_answer else "",
        }
        if self.rt.knobs.acp_finish_status:
            data["statusCode"] = status
        self._notify({"sessionUpdate": "notification", "type": "chat_finish", "data": data})
        log_finish(Flow.ACP, self.turn.request_id, status, usage)


def error_reason(status: int, message: str) -> str:
    """How an ACP finish words a failure without `statusCode` (our choice, [G])."""
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    return f"{status} {phrase}: {message}" if message else f"{status} {phrase}"


ACP_METHODS: dict[str, Method] = {
    "session/new": Method(session_new, "acp.NewSessionRequest"),
    "session/set_model": Method(set_model, "acp.SetSessionModelRequest"),
    "session/set_mode": Method(set_mode, "acp.SetSessionModeRequest"),
    "session/prompt": Method(session_prompt, "acp.PromptRequest"),
    "session/cancel": Method(session_cancel, "acp.CancelNotification"),
    "session/load": Method(session_load, "acp.LoadSessionRequest"),
}
