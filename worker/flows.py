"""Runs in the worker: the two upstream chat protocols, as streams of upstream events.

Legacy (lingma-protocol.md §5.3): `chat/ask` is accepted at once, then `chat/answer` deltas and
`chat/finish` (statusCode 200 = ok) arrive as pushes. ACP (§5.4): `session/new`,
`session/set_model`, then `session/prompt` whose `session/update` notifications carry chunks,
thoughts, tool calls and finally `notification/chat_finish`. Both filter pushes by request id
(ACP: `_meta["ai-coding/request-id"]`), since one connection may see other traffic.

A legacy turn whose `chat/finish` never comes is ended by silence once answer text has arrived
(§5.3 "end-of-answer detection", fallback): the text is kept and the runtime is told to stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncGenerator
from typing import Any

from protocol.messages import ErrorCode
from worker.rpc import METHOD_NOT_FOUND, RpcClosed, RpcConnection, RpcError, refused
from worker.upstream import (
    PROMPT_DONE,
    STOP_SETTLE_S,
    Ask,
    End,
    Event,
    NativeTool,
    NoAcp,
    PushQueue,
    Text,
    Thought,
    UpstreamFailure,
    Usage,
    end_from,
    int_or,
    rpc_failure,
)

log = logging.getLogger(__name__)

IDLE_END_REASON = "idle"  # our End reason when silence, not chat/finish, closed a legacy turn


def _ms() -> int:
    return int(time.time() * 1000)


# --------------------------------------------------------------------------- legacy


class LegacyFlow:
    name = "legacy"

    async def open_session(self, conn: RpcConnection, ask: Ask, timeout: float) -> str:
        return str(uuid.uuid4())  # the runtime creates the session on first use of the id

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
        self, conn: RpcConnection, pushes: PushQueue, ask: Ask, silence_s: float
    ) -> AsyncGenerator[Event, None]:
        try:
            accepted = await conn.call("chat/ask", self.params(ask), silence_s)
        except RpcError as exc:
            raise rpc_failure(exc) from exc
        _check_accepted(accepted)
        answered = False  # any non-empty chat/answer text yet (empty deltas are normal, §5.3)
        while True:
            try:
                method, params = await pushes.next(silence_s)
            except UpstreamFailure as exc:
                if not silence_ends_answer(exc, answered=answered):
                    raise
                break
            if not _mine(params, ask):
                continue
            if method == "chat/answer":
                text = str(params.get("text") or "")
                answered = answered or bool(text)
                yield Text(text)
            elif method == "chat/think":
                yield Thought(str(params.get("text") or ""))
            elif method == "context/usage/sync":
                yield Usage(int_or(params.get("usedTokens")), int_or(params.get("limitTokens")))
            elif method == "chat/finish":
                yield end_from(params)
                return
        # The answer came but its chat/finish did not: keep the text, and stop the runtime's
        # turn so this connection can serve the next ask.
        log.warning("no chat/finish after %.0fs of silence: ending the answer", silence_s)
        with contextlib.suppress(RpcClosed, RpcError, TimeoutError):
            await self.stop(conn, ask)
        yield End(200, IDLE_END_REASON)

    async def stop(self, conn: RpcConnection, ask: Ask) -> None:
        params = {"requestId": ask.request_id, "sessionId": ask.session_id}
        await conn.call("chat/stop", params, STOP_SETTLE_S)


def silence_ends_answer(failure: UpstreamFailure, *, answered: bool) -> bool:
    """A silence after answer text ends a legacy turn; before any text it stays a timeout."""
    return answered and failure.code is ErrorCode.UPSTREAM_TIMEOUT


def _check_accepted(reply: Any) -> None:
    if not isinstance(reply, dict) or not refused(reply):
        return
    message = f"{reply.get('errorCode') or ''} {reply.get('errorMessage') or ''}".strip()
    raise rpc_failure(RpcError(0, message or "chat/ask refused", "chat/ask"))


def _mine(params: dict[str, Any], ask: Ask) -> bool:
    request_id = params.get("requestId")
    if request_id:
        return bool(request_id == ask.request_id)
    session_id = params.get("sessionId")
    return not session_id or session_id == ask.session_id


# --------------------------------------------------------------------------- ACP


class AcpFlow:
    name = "acp"

    async def open_session(self, conn: RpcConnection, ask: Ask, timeout: float) -> str:
        """`session/new` + `session/set_model`; RpcError -32601 means this runtime has no ACP."""
        params = {"cwd": ask.cwd, "mcpServers": [], "_meta": {}, "timestamp": _ms()}
        try:
            result = await conn.call("session/new", params, timeout)
        except RpcError as exc:
            if exc.code == METHOD_NOT_FOUND:
                raise NoAcp(str(exc)) from None
            raise rpc_failure(exc) from None
        session_id = ""
        if isinstance(result, dict):
            session_id = str(result.get("sessionId") or result.get("id") or "")
        if not session_id:
            raise UpstreamFailure(ErrorCode.UPSTREAM_ERROR, "session/new returned no session id")
        await self.set_model(conn, session_id, ask.model_key, timeout)
        return session_id

    async def set_model(
        self, conn: RpcConnection, session_id: str, key: str, timeout: float
    ) -> None:
        params = {"sessionId": session_id, "modelId": key, "timestamp": _ms(), "_meta": {}}
        try:
            await conn.call("session/set_model", params, timeout)
        except RpcError as exc:
            raise UpstreamFailure(ErrorCode.UNKNOWN_MODEL, str(exc)) from exc

    def params(self, ask: Ask) -> dict[str, Any]:
        return {
            "sessionId": ask.session_id,
            "prompt": [{"type": "text", "text": ask.question}],
            "_meta": {
                "ai-coding/request-id": ask.request_id,
                "ai-coding/mode": ask.mode,
                "ai-coding/model": ask.model_key,
            },
        }

    async def stream(
        self, conn: RpcConnection, pushes: PushQueue, ask: Ask, silence_s: float
    ) -> AsyncGenerator[Event, None]:
        # The prompt's own answer may come before, during or after the stream (§5.4).
        prompt = await conn.begin_call("session/prompt", self.params(ask))
        prompt.add_done_callback(lambda _answer: pushes.put(PROMPT_DONE, {}))
        try:
            while True:
                method, params = await pushes.next(silence_s)
                if method == PROMPT_DONE:
                    end = _prompt_outcome(prompt)
                    if end is not None:
                        yield end
                        return
                    continue
                if method == "chat/finish" and params.get("requestId") == ask.request_id:
                    yield end_from(params)
                    return
                if method != "session/update" or not _acp_mine(params, ask):
                    continue
                event = acp_event(params.get("update"))
                if event is not None:
                    yield event
                    if isinstance(event, End):
                        return
        finally:
            if not prompt.done():
                prompt.cancel()
            with contextlib.suppress(BaseException):
                await prompt

    async def stop(self, conn: RpcConnection, ask: Ask) -> None:
        params = {"sessionId": ask.session_id, "_meta": {"ai-coding/request-id": ask.request_id}}
        await conn.call("session/cancel", params, STOP_SETTLE_S)


def _prompt_outcome(prompt: asyncio.Future[Any]) -> End | None:
    """An error answer fails the turn; a standard ACP `stopReason` ends it; else keep reading."""
    if prompt.cancelled():
        return None
    exc = prompt.exception()
    if isinstance(exc, RpcError):
        raise rpc_failure(exc)
    if isinstance(exc, RpcClosed):
        raise UpstreamFailure(ErrorCode.UPSTREAM_ERROR, "Lingma connection lost mid-answer")
    if exc is not None:
        raise UpstreamFailure(ErrorCode.UPSTREAM_ERROR, f"session/prompt failed: {exc}")
    result = prompt.result()
    if isinstance(result, dict) and result.get("stopReason"):
        reason = str(result["stopReason"])
        return End(200 if reason in {"end_turn", "max_tokens"} else 499, reason)
    return None


def _acp_mine(params: dict[str, Any], ask: Ask) -> bool:
    meta = params.get("_meta")
    request_id = meta.get("ai-coding/request-id") if isinstance(meta, dict) else None
    if request_id:
        return bool(request_id == ask.request_id)
    return params.get("sessionId") in (None, "", ask.session_id)


def _content_text(content: Any) -> str | None:
    """`content.text`; a list of parts (ACP's shape elsewhere, not seen here) is joined."""
    if isinstance(content, dict):
        text = content.get("text")
        return text if isinstance(text, str) else None
    if isinstance(content, list):
        texts = [
            p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        ]
        return "".join(texts) if texts else None
    return None


def _chunk(kind: str, update: dict[str, Any]) -> Event | None:
    text = _content_text(update.get("content"))
    if text is None:
        return None
    return Text(text) if kind == "agent_message_chunk" else Thought(text)


def _tool_call(update: dict[str, Any]) -> Event:
    meta = update.get("_meta")
    tool_name = meta.get("ai-coding/tool-name") if isinstance(meta, dict) else None
    name = tool_name or update.get("title") or update.get("kind") or ""
    raw = update.get("rawInput")
    arguments = json.dumps(raw if raw is not None else {}, ensure_ascii=False)
    return NativeTool(str(update.get("toolCallId") or ""), str(name), arguments)


def _notification(update: dict[str, Any]) -> Event | None:
    data = update.get("data")
    data = data if isinstance(data, dict) else {}
    if update.get("type") == "context_usage":
        return Usage(int_or(data.get("usedTokens")), int_or(data.get("limitTokens")))
    if update.get("type") == "chat_finish":
        return end_from(data)
    return None


def acp_event(update: Any) -> Event | None:
    """One `session/update` payload as an upstream event (None for the ones we ignore)."""
    if not isinstance(update, dict):
        return None
    kind = update.get("sessionUpdate")
    if kind in {"agent_message_chunk", "agent_thought_chunk"}:
        return _chunk(kind, update)
    if kind == "tool_call":
        return _tool_call(update)
    if kind == "notification":
        return _notification(update)
    return None


def ends_turn(method: str, params: dict[str, Any], ask: Ask) -> bool:
    """Is this push the end of `ask`'s turn, in either flow's shape?"""
    if method == "chat/finish":
        return _mine(params, ask)
    if method == "session/update" and _acp_mine(params, ask):
        return isinstance(acp_event(params.get("update")), End)
    return False


async def settle(pushes: PushQueue, ask: Ask, timeout: float) -> bool:
    """After a stop, read the turn out to its finish so the connection can serve again."""
    deadline = asyncio.get_running_loop().time() + timeout
    try:
        while (remaining := deadline - asyncio.get_running_loop().time()) > 0:
            method, params = await pushes.next(remaining)
            if ends_turn(method, params, ask):
                return True
    except UpstreamFailure:
        pass
    return False
