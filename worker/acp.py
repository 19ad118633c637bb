"""Runs in the worker: the ACP-like chat protocol, `session/*` (lingma-protocol.md §5.4).

Done the way lingma-proxy does it: `session/new` and `session/set_model` within a setup
timeout (15 s, §6.13), then `session/prompt` sent without waiting for its answer, whose
`session/update` notifications (picked by `_meta["ai-coding/request-id"]`) carry chunks,
thoughts, tool calls and finally `notification/chat_finish`. Any `session/new` failure or
silence means this runtime has no usable ACP: the AUTO flow falls back to legacy. A
`set_model` failure only fails the chat when it says the model is unknown: the model also
travels in `_meta["ai-coding/model"]`. Cancelling is the `session/cancel` notification.
Images go into `session/prompt` as image items, their files written for the turn's duration
(worker/images.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import time
from collections.abc import AsyncGenerator, Sequence
from typing import Any

from protocol.vocabulary import ErrorCode
from worker.endings import end_from, error_detail, rpc_failure
from worker.images import ImageFiles, PromptImage
from worker.routes import REQUEST_ID_KEY, Subscription, push_request_id
from worker.rpc import RpcClosed, RpcConnection, RpcError
from worker.upstream import (
    PROMPT_DONE,
    Ask,
    ConnectionLost,
    ContextUsage,
    End,
    Event,
    NativeTool,
    NoAcp,
    PushQueue,
    Text,
    Thought,
    Timers,
    TurnClock,
    UpstreamFailure,
    int_or,
)

log = logging.getLogger(__name__)

_UNKNOWN_MODEL = re.compile(
    r"model.*(not found|unknown|invalid|not exist|unsupported|not support)|"
    r"(unknown|invalid|unsupported) model",
    re.IGNORECASE,
)


def _ms() -> int:
    return int(time.time() * 1000)


def shell_type() -> str:
    """What lingma-proxy sends as `ai-coding/shell-type` on Unix: `$SHELL`'s name, else `sh`."""
    return os.path.basename(os.environ.get("SHELL", "").strip()) or "sh"


SHELL_TYPE = shell_type()


def prompt_meta(ask: Ask) -> dict[str, Any]:
    """`_meta` as public clients send it (LP `CreateMeta`, §5.4); `mode` only when agent."""
    meta: dict[str, Any] = {
        REQUEST_ID_KEY: ask.request_id,
        "ai-coding/shell-type": SHELL_TYPE,
        "ai-coding/enabled-mcp-servers": [],
        "ai-coding/model": ask.model_key,
    }
    if ask.mode == "agent":
        meta["ai-coding/mode"] = "agent"
    return meta


class AcpFlow:
    __slots__ = ("images",)  # one per chat
    name = "acp"

    def __init__(self, images: ImageFiles | None = None) -> None:
        self.images = images  # where a chat's images are put for the runtime to read

    async def open_session(self, conn: RpcConnection, ask: Ask, timers: Timers) -> str:
        """`session/new` then `session/set_model`; NoAcp when session/new is not usable."""
        params = {"cwd": ask.cwd, "mcpServers": [], "_meta": {}, "timestamp": _ms()}
        try:
            result = await conn.call("session/new", params, timers.setup_s)
        except RpcError as exc:
            raise NoAcp(f"session/new failed: {exc}") from None
        except TimeoutError:
            raise NoAcp(f"session/new did not answer within {timers.setup_s:.0f}s") from None
        except RpcClosed as exc:
            raise ConnectionLost(f"Lingma connection lost during session/new: {exc}") from None
        session_id = ""
        if isinstance(result, dict):  # LP and CIP accept `id` as well
            session_id = str(result.get("sessionId") or result.get("id") or "")
        if not session_id:
            raise NoAcp("session/new returned no session id")
        await self.set_model(conn, session_id, ask, timers)
        return session_id

    async def set_model(
        self, conn: RpcConnection, session_id: str, ask: Ask, timers: Timers
    ) -> None:
        params = {
            "sessionId": session_id,
            "modelId": ask.model_key,
            "timestamp": _ms(),
            "_meta": prompt_meta(ask),
        }
        try:
            await conn.call("session/set_model", params, timers.setup_s)
        except RpcError as exc:
            if _UNKNOWN_MODEL.search(exc.message):
                raise UpstreamFailure(ErrorCode.UNKNOWN_MODEL, str(exc)) from exc
            log.warning("session/set_model failed (%s): the model goes in _meta only", exc)
        except TimeoutError:
            log.warning("session/set_model did not answer: the model goes in _meta only")
        except RpcClosed as exc:
            raise ConnectionLost(f"Lingma connection lost during set_model: {exc}") from None

    def subscribe(self, conn: RpcConnection, pushes: PushQueue, ask: Ask) -> Subscription:
        return conn.routes.subscribe(pushes, request_id=ask.request_id, session_id=ask.session_id)

    def params(self, ask: Ask, images: Sequence[PromptImage] = ()) -> dict[str, Any]:
        params: dict[str, Any] = {
            "sessionId": ask.session_id,
            "prompt": [{"type": "text", "text": ask.question}, *(i.item() for i in images)],
            "_meta": prompt_meta(ask),
        }
        if images:  # mirrored as lingma-proxy sends them (§5.4)
            params["contextParams"] = [image.item() for image in images]
        return params

    def stream(
        self, conn: RpcConnection, pushes: PushQueue, ask: Ask, timers: Timers
    ) -> AsyncGenerator[Event, None]:
        """The turn's events; its image files exist from the prompt until the turn is over.

        A turn without images gets the turn's own generator: a wrapper around it would cost
        one more generator step for every streamed chunk.
        """
        if not ask.images:
            return self._stream(conn, pushes, ask, timers, ())
        return self._stream_with_images(conn, pushes, ask, timers)

    async def _stream_with_images(
        self, conn: RpcConnection, pushes: PushQueue, ask: Ask, timers: Timers
    ) -> AsyncGenerator[Event, None]:
        if self.images is None:
            raise UpstreamFailure(ErrorCode.BAD_REQUEST, "this flow has no place for images")
        async with self.images.staged(ask.request_id, ask.images) as images:
            async for event in self._stream(conn, pushes, ask, timers, images):
                yield event

    async def _stream(
        self,
        conn: RpcConnection,
        pushes: PushQueue,
        ask: Ask,
        timers: Timers,
        images: Sequence[PromptImage],
    ) -> AsyncGenerator[Event, None]:
        # Not awaited: its answer may come before, during or after the stream (§5.4).
        try:
            prompt = await conn.begin_call("session/prompt", self.params(ask, images))
        except RpcClosed as exc:
            raise ConnectionLost(f"Lingma connection lost before the prompt: {exc}") from None
        prompt.add_done_callback(lambda _answer: pushes.put(PROMPT_DONE, {}))
        clock = TurnClock(timers)
        errors: list[str] = []  # error notifications seen, for the finish's verdict
        try:
            while True:
                push = await pushes.next(clock.remaining())
                if push is None:
                    raise clock.expired()
                method, params = push
                if method == PROMPT_DONE:
                    end = _prompt_outcome(prompt)
                    if end is not None:
                        yield end
                        return
                    continue
                if not _own(method, params, ask):
                    continue  # another chat's, or nobody's: it must not reset our clock
                event = _event(method, params, errors)
                # Not held across the yield: a chat waiting for its next chunk keeps no push
                # dict alive (about 1.2 KiB per open stream).
                del push, params
                clock.heard(output=_is_output(event))
                if event is not None:
                    yield event
                    if isinstance(event, End):
                        return
        finally:
            if not prompt.done():
                prompt.cancel()
            with contextlib.suppress(BaseException):
                await prompt

    async def stop(self, conn: RpcConnection, ask: Ask, timers: Timers) -> None:
        """`session/cancel` is a notification (QB, ACP): nothing answers it; the finish ends it."""
        meta = {REQUEST_ID_KEY: ask.request_id}
        await conn.notify("session/cancel", {"sessionId": ask.session_id, "_meta": meta})

    def ends_turn(self, method: str, params: dict[str, Any], ask: Ask) -> bool:
        if method == "chat/finish":
            return push_request_id(params) == ask.request_id
        if method != "session/update" or push_request_id(params) not in ("", ask.request_id):
            return False
        return isinstance(acp_event(params.get("update")), End)


def _own(method: str, params: dict[str, Any], ask: Ask) -> bool:
    """Is this push about `ask`? Its request id, or (none given) its session id, says so."""
    request_id = push_request_id(params)
    if request_id:
        return request_id == ask.request_id
    return method == "session/update" and params.get("sessionId") == ask.session_id


def _event(method: str, params: dict[str, Any], errors: list[str]) -> Event | None:
    if method == "chat/finish":  # the legacy finish also appears in this flow (§5.4)
        return end_from(params, " ".join(errors))
    if method == "chat/process_step_callback" and params.get("status") in ("error", "failed"):
        errors.append(error_detail(params) or f"step {params.get('step')} failed")
    if method != "session/update":
        return None
    update = params.get("update")
    error = _error_notification(update)
    if error is not None:
        errors.append(error)
        return None
    event = acp_event(update)
    if isinstance(event, End) and errors:
        data = update.get("data") if isinstance(update, dict) else None
        return end_from(data if isinstance(data, dict) else {}, " ".join(errors))
    return event


def _is_output(event: Event | None) -> bool:
    if isinstance(event, Text | Thought):
        return bool(event.text)
    return isinstance(event, NativeTool)


def _prompt_outcome(prompt: asyncio.Future[Any]) -> End | None:
    """An error answer fails the turn; a standard ACP `stopReason` ends it; else keep reading."""
    if prompt.cancelled():
        return None
    exc = prompt.exception()
    if isinstance(exc, RpcError):
        raise rpc_failure(exc)
    if isinstance(exc, RpcClosed):
        raise ConnectionLost()
    if exc is not None:
        raise UpstreamFailure(ErrorCode.UPSTREAM_ERROR, f"session/prompt failed: {exc}")
    result = prompt.result()
    if isinstance(result, dict) and result.get("stopReason"):
        reason = str(result["stopReason"])
        return End(200 if reason in {"end_turn", "max_tokens"} else 499, reason)
    return None


def _error_notification(update: Any) -> str | None:
    """An error notification's text: `notification` whose type names an error (shape [G])."""
    if not isinstance(update, dict) or update.get("sessionUpdate") != "notification":
        return None
    kind = str(update.get("type") or "")
    if "error" not in kind.lower():
        return None
    data = update.get("data")
    detail = error_detail(data) if isinstance(data, dict) else str(data or "")
    return detail or kind


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
        return ContextUsage(int_or(data.get("usedTokens")), int_or(data.get("limitTokens")))
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
