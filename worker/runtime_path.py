"""Runs in the worker: how a chat is answered through the account's Lingma runtime (§5).

Pick the flow (ACP on a shared connection; legacy on a leased one; AUTO falls back to legacy for
this binary's life when `session/new` fails or hangs), look the conversation prefix up in the
session cache, run the upstream turn, relay its events (worker/answer.py) and read how it ended
(worker/endings.py). A connection lost before any output is retried once on a fresh
connection; a finish without text or tool call is an upstream error, never an empty 200. A
session the chat leaves behind, and that did not go into the cache, is deleted upstream.
Images go as ACP image prompt items (worker/images.py); legacy chat/ask cannot carry them, so
a chat with images that ends up there is refused with a retryable 400 before anything is asked.
The runner around it (worker/chat.py) owns the slot, the deadline and the accounting.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from protocol.chat import ChatRequest, Message, Usage
from protocol.specs import ChatFlow, WorkerSpec
from protocol.tokens import estimate_messages_tokens, estimate_tokens
from protocol.vocabulary import ErrorCode
from worker import upstream
from worker.acp import AcpFlow
from worker.answer import Answer
from worker.chat import Answered, ChatError, Emit
from worker.endings import check_end
from worker.images import ImageFiles, legacy_refusal, prompt_images
from worker.legacy import LegacyFlow
from worker.metrics import WorkerMetrics
from worker.models import ModelResolver, UnknownModel
from worker.prompt import flatten, has_content
from worker.rpc import RpcClosed, RpcConnection, RpcError
from worker.runtime_chat import CacheLookup, Flow, Phase, RuntimeChat, timers_from
from worker.runtime_client import AcpSupport, RuntimeClient
from worker.sessions import SessionCache, SessionEntry, conversation_key, split_latest_turn
from worker.upstream import Ask, ConnectionLost, End, NoAcp, PushQueue, UpstreamFailure

log = logging.getLogger(__name__)

# The runtime to ask now, and the binary generation it belongs to.
CurrentRuntime = Callable[[], tuple[RuntimeClient | None, int]]


class RuntimePath:
    def __init__(
        self,
        spec: WorkerSpec,
        *,
        runtime: CurrentRuntime,
        sessions: SessionCache,
        metrics: WorkerMetrics,
        resolver: ModelResolver,
        on_not_logged_in: Callable[[], None],
        on_discard: Callable[[str, int], None],
    ) -> None:
        self.spec = spec
        self.sessions = sessions
        self.metrics = metrics
        self.resolver = resolver
        self.timers = timers_from(spec)
        self.workspace = str(Path(spec.work_dir) / "workspace")
        self.images = ImageFiles(Path(spec.work_dir) / "images", spec.image_uri_scheme)
        self._runtime = runtime
        self._on_not_logged_in = on_not_logged_in
        self._on_discard = on_discard  # (session id, binary generation): delete it upstream

    # ----------------------------------------------------------------- ChatPath

    def begin(self, request: ChatRequest, emit: Emit) -> RuntimeChat:
        answer = Answer(request.id, stream=request.stream, emit=emit)
        model_key = self._resolve(request)
        client, generation = self._runtime()
        if client is None:  # it went down since the worker took the chat
            raise ChatError(ErrorCode.UNAVAILABLE, "Lingma runtime is not up yet", 1.0)
        return RuntimeChat(request, model_key, time.monotonic(), answer, client, generation)

    async def answer(self, chat: RuntimeChat) -> Answered:
        try:
            flow = await self._converse(chat)
        except UpstreamFailure as exc:
            if exc.code is ErrorCode.UPSTREAM_TIMEOUT:
                await self.stop(chat)
            raise self._upstream_error(exc) from None
        except (RpcClosed, RpcError) as exc:
            raise ChatError(ErrorCode.UPSTREAM_ERROR, f"Lingma runtime: {exc}") from None
        return self._finished(chat, flow)

    async def stop(self, chat: RuntimeChat) -> None:
        """Tell the runtime to stop generating and wait (bounded) for the turn's finish."""
        conn, flow, ask, pushes = chat.conn, chat.flow, chat.ask, chat.pushes
        if conn is None or flow is None or ask is None or pushes is None:
            return
        if chat.upstream_done or conn.closed:
            return
        try:
            await asyncio.shield(flow.stop(conn, ask, self.timers))
            settle = upstream.settle(
                pushes, lambda m, p: flow.ends_turn(m, p, ask), self.timers.stop_settle_s
            )
            settled = await settle
        except Exception as exc:  # the stop is best effort: the chat already has its outcome
            log.info("stopping the upstream turn failed: %r", exc)
        else:
            if settled:
                chat.phase = Phase.STOPPED
            log.info("upstream turn stopped", extra={"settled": settled})

    async def release(self, chat: RuntimeChat) -> None:
        """Unsubscribe from the connection and give a leased one back."""
        if chat.subscription is not None:
            chat.subscription.close()
            chat.subscription = None
        leased, chat.leased, chat.conn = chat.leased, None, None
        if leased is not None:
            await chat.client.release(leased, reusable=chat.upstream_done)

    def ended(self, chat: RuntimeChat) -> None:
        if chat.ask is not None and chat.phase is not Phase.CACHED:
            self._on_discard(chat.ask.session_id, chat.generation)

    # ----------------------------------------------------------------- one upstream turn

    def _resolve(self, request: ChatRequest) -> str:
        if not has_content(request.messages):
            raise ChatError(ErrorCode.BAD_REQUEST, "the conversation has no text")
        try:
            return self.resolver.resolve(request.model)
        except UnknownModel as exc:
            raise ChatError(ErrorCode.UNKNOWN_MODEL, str(exc)) from None

    async def _converse(self, chat: RuntimeChat) -> Flow:
        """One upstream turn; a connection lost before any output reached the client is retried
        once (a shared connection also drops the chats of others: theirs are retried too)."""
        for attempt in (1, 2):
            try:
                return await self._converse_once(chat)
            except ConnectionLost as exc:
                if attempt == 2 or chat.answer.sent:
                    raise
                log.info("%s before the client got any of it: asking again", exc.message)
                chat.answer.restart()
                await self.release(chat)
                if chat.ask is not None:  # the abandoned attempt's session goes too
                    self._on_discard(chat.ask.session_id, chat.generation)
                    chat.ask, chat.phase = None, Phase.PREPARING
        raise AssertionError("unreachable")

    async def _converse_once(self, chat: RuntimeChat) -> Flow:
        client = chat.client
        if self._wants_acp(client):
            acp = AcpFlow(self.images)
            chat.conn = await _reach(client.shared())
            try:
                await self._ask_with_cache(chat, acp)
            except NoAcp as exc:
                self._no_acp(client, exc)
            else:
                client.acp = AcpSupport.YES
                return acp
        refusal = legacy_refusal(chat.request.messages)
        if refusal is not None:
            raise ChatError(ErrorCode.BAD_REQUEST, refusal, retryable=True)
        legacy = LegacyFlow()
        chat.conn = chat.leased = await _reach(client.lease())
        await self._ask_with_cache(chat, legacy)
        return legacy

    def _wants_acp(self, client: RuntimeClient) -> bool:
        # Read per chat, not once: a concurrent first chat may have switched AUTO to legacy.
        flow = self.spec.chat_flow
        return flow is ChatFlow.ACP or (flow is ChatFlow.AUTO and client.acp is not AcpSupport.NO)

    def _no_acp(self, client: RuntimeClient, exc: NoAcp) -> None:
        if self.spec.chat_flow is ChatFlow.ACP:  # only an operator's explicit choice forbids it
            raise UpstreamFailure(ErrorCode.UPSTREAM_ERROR, f"no usable ACP: {exc}") from None
        if client.acp is not AcpSupport.NO:
            log.warning("%s: legacy chat/ask until the binary restarts", exc)
            client.acp = AcpSupport.NO

    def _reuse(self, flow: Flow) -> bool:
        """Legacy reuse is opt-in: history per sessionId is undocumented for chat/ask (§5.3)."""
        if not (self.spec.session_reuse and self.sessions.enabled):
            return False
        return flow.name == AcpFlow.name or self.spec.legacy_session_reuse

    def _lookup(self, chat: RuntimeChat, prefix: list[Message], flow: Flow) -> SessionEntry | None:
        if not (self._reuse(flow) and prefix):
            return None
        key = conversation_key(chat.request.scope, chat.model_key, prefix)
        entry = self.sessions.take(key, generation=chat.generation, flow=flow.name)
        if chat.lookup is CacheLookup.NOT_YET:
            chat.lookup = CacheLookup.MISS if entry is None else CacheLookup.HIT
            self.metrics.session_lookup(entry is not None)
        return entry

    async def _ask_with_cache(self, chat: RuntimeChat, flow: Flow) -> None:
        messages = chat.request.messages
        prefix, latest = split_latest_turn(messages)
        entry = self._lookup(chat, prefix, flow)
        if entry is None:
            await self._ask(chat, flow, session_id="", messages=messages)
            return
        try:
            await self._ask(chat, flow, session_id=entry.session_id, messages=latest)
        except UpstreamFailure as exc:
            if not exc.session_rejected or chat.answer.first_token_at is not None:
                raise
            log.info(
                "runtime forgot session %s: resending the whole conversation", entry.session_id
            )
            await self._ask(chat, flow, session_id="", messages=messages)

    async def _ask(
        self, chat: RuntimeChat, flow: Flow, *, session_id: str, messages: Sequence[Message]
    ) -> None:
        conn = chat.conn
        assert conn is not None
        ask = Ask(
            request_id=upstream.new_request_id(),
            session_id=session_id,
            question=flatten(messages),
            model_key=chat.model_key,
            mode="agent" if chat.request.tools else self.spec.default_ask_mode,
            is_reply=bool(session_id),
            cwd=self.workspace,
            images=tuple(prompt_images(messages)),
        )
        if not session_id:
            ask = dataclasses.replace(
                ask, session_id=await flow.open_session(conn, ask, self.timers)
            )
        if chat.subscription is not None:
            chat.subscription.close()
        chat.asking(ask, flow)
        chat.pushes = pushes = PushQueue()
        chat.subscription = flow.subscribe(conn, pushes, ask)
        events = flow.stream(conn, pushes, ask, self.timers)
        async with contextlib.aclosing(events):
            end = await self._relay(chat, events)
        check_end(end)
        if chat.answer.empty and not end.filtered:
            reason = end.reason or "no reason given"
            raise UpstreamFailure(
                ErrorCode.UPSTREAM_ERROR, f"Lingma finished without an answer ({reason})"
            )

    async def _relay(self, chat: RuntimeChat, events: upstream.AsyncEvents) -> End:
        async for event in events:
            if isinstance(event, End):
                chat.answer.end(event)
                chat.ended(event)
                return event
            chat.answer.take(event)
        raise UpstreamFailure(ErrorCode.UPSTREAM_ERROR, "the answer ended without a finish")

    def _finished(self, chat: RuntimeChat, flow: Flow) -> Answered:
        request, answer = chat.request, chat.answer
        session_id = chat.ask.session_id if chat.ask is not None else ""
        if self._reuse(flow) and session_id:
            history = [*request.messages, Message(role="assistant", text=answer.text)]
            key = conversation_key(request.scope, chat.model_key, history)
            self.sessions.put(
                key, session_id=session_id, generation=chat.generation, flow=flow.name
            )
            if self.sessions.enabled:
                chat.phase = Phase.CACHED
        return Answered(
            reason=chat.finish_reason(),
            usage=Usage(
                prompt_tokens=estimate_messages_tokens(request.messages),
                completion_tokens=estimate_tokens(answer.text) + answer.reasoning.tokens,
            ),
            upstream_session=session_id,
            session_reused=chat.reused,
        )

    def _upstream_error(self, exc: UpstreamFailure) -> ChatError:
        if exc.code is ErrorCode.NOT_LOGGED_IN:
            self._on_not_logged_in()
        return ChatError(exc.code, exc.message, exc.retry_after)


async def _reach(connecting: Awaitable[RpcConnection]) -> RpcConnection:
    """A connection for the chat, or UNAVAILABLE: the runtime does not take connections."""
    try:
        return await connecting
    except (RpcClosed, RpcError, OSError, TimeoutError) as exc:
        raise ChatError(ErrorCode.UNAVAILABLE, f"Lingma runtime unreachable: {exc}") from None
