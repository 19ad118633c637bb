"""Runs in the worker: one ChatRequest from admission to its single Finish or Failure.

Order of work: resolve the model, take a concurrency slot (or fail OVERLOADED after the queue
timeout), pick the flow (ACP on a shared connection; legacy on a leased one; AUTO falls back to
legacy for this binary's life when `session/new` fails or hangs), look the conversation prefix
up in the session cache, run the upstream turn, relay its events (worker/answer.py) and map how
it ended to a Finish or an ErrorCode. A connection lost before any output is retried once on a
fresh connection; a finish without text or tool call is an upstream error, never an empty 200.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from protocol.chat import ChatEvent, ChatRequest, Failure, Finish, Message, Usage
from protocol.logs import request_id_var
from protocol.specs import ChatFlow, WorkerSpec
from protocol.tokens import estimate_messages_tokens, estimate_tokens
from protocol.vocabulary import ErrorCode
from worker import upstream
from worker.acp import AcpFlow
from worker.answer import Answer
from worker.endings import check_end
from worker.legacy import LegacyFlow
from worker.metrics import WorkerMetrics
from worker.models import ModelResolver, UnknownModel
from worker.prompt import flatten, has_text
from worker.rpc import RpcClosed, RpcConnection, RpcError
from worker.runtime_chat import CacheLookup, ChatError, Flow, Phase, RuntimeChat, timers_from
from worker.runtime_client import AcpSupport, RuntimeClient
from worker.sessions import SessionCache, SessionEntry, conversation_key, split_latest_turn
from worker.slots import Overloaded, UpstreamSlots
from worker.upstream import Ask, ConnectionLost, End, NoAcp, PushQueue, UpstreamFailure

log = logging.getLogger(__name__)

Emit = Callable[[ChatEvent], None]


class ChatService:
    def __init__(
        self,
        spec: WorkerSpec,
        *,
        sessions: SessionCache,
        metrics: WorkerMetrics,
        resolver: ModelResolver,
        on_rate_limited: Callable[[float], None],
        on_not_logged_in: Callable[[], None],
        on_discard: Callable[[str, int], None] = lambda _session, _generation: None,
    ) -> None:
        self.spec = spec
        self.sessions = sessions
        self.metrics = metrics
        self.resolver = resolver
        self.timers = timers_from(spec)
        self.slots = UpstreamSlots(spec.max_concurrency, spec.queue_timeout_s)
        self.workspace = str(Path(spec.work_dir) / "workspace")
        self._on_rate_limited = on_rate_limited
        self._on_not_logged_in = on_not_logged_in
        self._on_discard = on_discard  # (session id, binary generation): delete it upstream

    async def run(
        self, request: ChatRequest, client: RuntimeClient, generation: int, emit: Emit
    ) -> None:
        """Serve one chat; always emits exactly one Finish or Failure (also when cancelled)."""
        turn: RuntimeChat | None = None
        status = "ok"
        request_id_var.set(request.request_id)  # this task's own context: every line carries it
        try:
            answer = Answer(request.id, stream=request.stream, emit=emit)
            turn = RuntimeChat(request, self._resolve(request), time.monotonic(), answer)
            async with self.slots.slot():
                emit(await self._serve(turn, client, generation, emit))
        except Overloaded as exc:
            status = ErrorCode.OVERLOADED.value
            emit(self.failure(request, ErrorCode.OVERLOADED, str(exc), exc.retry_after))
        except ChatError as exc:
            status = exc.code.value
            emit(self.failure(request, exc.code, exc.message, exc.retry_after))
        except asyncio.CancelledError:
            status = ErrorCode.CANCELLED.value
            emit(self.failure(request, ErrorCode.CANCELLED, "cancelled by the caller"))
        finally:
            self._account(turn, request, status)
            if turn is not None and turn.ask is not None and turn.phase is not Phase.CACHED:
                self._on_discard(turn.ask.session_id, generation)

    def failure(
        self, request: ChatRequest, code: ErrorCode, message: str, retry_after: float | None = None
    ) -> Failure:
        """The chat's Failure event, signed with this account (also for refusals before a run)."""
        return Failure(
            id=request.id,
            code=code,
            message=message,
            retry_after=retry_after,
            served_by=self.spec.name,
        )

    def _resolve(self, request: ChatRequest) -> str:
        if not has_text(request.messages):
            raise ChatError(ErrorCode.BAD_REQUEST, "the conversation has no text")
        try:
            return self.resolver.resolve(request.model)
        except UnknownModel as exc:
            raise ChatError(ErrorCode.UNKNOWN_MODEL, str(exc)) from None

    def _prompt_tokens(self, turn: RuntimeChat) -> int:
        """For the account's own figures (metrics, stats): the runtime's context_usage
        usedTokens when it sent one, else our estimate. What a client is told stays the shared
        estimate (protocol/tokens.py), so count_tokens and every reply agree on one prompt."""
        return turn.answer.used_tokens or estimate_messages_tokens(turn.request.messages)

    def _account(self, turn: RuntimeChat | None, request: ChatRequest, status: str) -> None:
        if turn is None:
            self.metrics.requests.labels(model="unresolved", status=status).inc()
            log.info("chat refused: %s", status, extra={"model": request.model})
            return
        first = turn.answer.first_token_at
        total_s = time.monotonic() - turn.started
        self.metrics.chat_done(
            model=turn.model_key,
            status=status,
            total_s=total_s,
            ttft_s=first - turn.started if first is not None else None,
            prompt_tokens=self._prompt_tokens(turn),
            completion_tokens=estimate_tokens(turn.answer.text),
        )
        log.info(
            "chat %s",
            status,
            extra={
                "model": turn.model_key,
                "total_ms": round(total_s * 1000, 1),
                "session_reused": turn.reused,
                "flow": turn.flow.name if turn.flow else "",
                "upstream_request": turn.ask.request_id if turn.ask else "",
            },
        )

    # ----------------------------------------------------------------- one upstream turn

    async def _serve(
        self, turn: RuntimeChat, client: RuntimeClient, generation: int, emit: Emit
    ) -> Finish:
        deadline = asyncio.timeout_at(self._deadline(turn.request))
        try:
            async with deadline:
                flow = await self._converse(turn, client, generation)
            return self._finished(turn, generation, flow)
        except TimeoutError:
            await self._stop(turn)
            if deadline.expired():
                raise ChatError(
                    ErrorCode.DEADLINE_EXCEEDED, "the request deadline passed"
                ) from None
            raise ChatError(ErrorCode.UPSTREAM_TIMEOUT, "Lingma did not answer in time") from None
        except asyncio.CancelledError:
            await self._stop(turn)
            raise
        except UpstreamFailure as exc:
            if exc.code is ErrorCode.UPSTREAM_TIMEOUT:
                await self._stop(turn)
            raise self._upstream_error(exc) from None
        except (RpcClosed, RpcError) as exc:
            raise ChatError(ErrorCode.UPSTREAM_ERROR, f"Lingma runtime: {exc}") from None
        finally:
            await self._let_go(turn, client)

    async def _converse(self, turn: RuntimeChat, client: RuntimeClient, generation: int) -> Flow:
        """One upstream turn; a connection lost before any output reached the client is retried
        once (a shared connection also drops the chats of others: theirs are retried too)."""
        for attempt in (1, 2):
            try:
                return await self._converse_once(turn, client, generation)
            except ConnectionLost as exc:
                if attempt == 2 or turn.answer.sent:
                    raise
                log.info("%s before the client got any of it: asking again", exc.message)
                turn.answer.restart()
                await self._let_go(turn, client)
                if turn.ask is not None:  # the abandoned attempt's session goes too
                    self._on_discard(turn.ask.session_id, generation)
                    turn.ask, turn.phase = None, Phase.PREPARING
        raise AssertionError("unreachable")

    async def _converse_once(
        self, turn: RuntimeChat, client: RuntimeClient, generation: int
    ) -> Flow:
        if self._wants_acp(client):
            acp = AcpFlow()
            turn.conn = await _reach(client.shared())
            try:
                await self._ask_with_cache(turn, acp, generation)
            except NoAcp as exc:
                self._no_acp(client, exc)
            else:
                client.acp = AcpSupport.YES
                return acp
        legacy = LegacyFlow()
        turn.conn = turn.leased = await _reach(client.lease())
        await self._ask_with_cache(turn, legacy, generation)
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

    def _deadline(self, request: ChatRequest) -> float:
        loop_now = asyncio.get_running_loop().time()
        limit = loop_now + self.spec.request_timeout_s
        if request.deadline > 0:
            limit = min(limit, loop_now + (request.deadline - time.time()))
        return limit

    def _reuse(self, flow: Flow) -> bool:
        """Legacy reuse is opt-in: history per sessionId is undocumented for chat/ask (§5.3)."""
        if not (self.spec.session_reuse and self.sessions.enabled):
            return False
        return flow.name == AcpFlow.name or self.spec.legacy_session_reuse

    def _lookup(
        self, turn: RuntimeChat, prefix: list[Message], generation: int, flow: Flow
    ) -> SessionEntry | None:
        if not (self._reuse(flow) and prefix):
            return None
        key = conversation_key(turn.request.scope, turn.model_key, prefix)
        entry = self.sessions.take(key, generation=generation, flow=flow.name)
        if turn.lookup is CacheLookup.NOT_YET:
            turn.lookup = CacheLookup.MISS if entry is None else CacheLookup.HIT
            self.metrics.session_lookup(entry is not None)
        return entry

    async def _ask_with_cache(self, turn: RuntimeChat, flow: Flow, generation: int) -> None:
        messages = turn.request.messages
        prefix, latest = split_latest_turn(messages)
        entry = self._lookup(turn, prefix, generation, flow)
        if entry is None:
            await self._ask(turn, flow, session_id="", messages=messages)
            return
        try:
            await self._ask(turn, flow, session_id=entry.session_id, messages=latest)
        except UpstreamFailure as exc:
            if not exc.session_rejected or turn.answer.first_token_at is not None:
                raise
            log.info(
                "runtime forgot session %s: resending the whole conversation", entry.session_id
            )
            await self._ask(turn, flow, session_id="", messages=messages)

    async def _ask(
        self, turn: RuntimeChat, flow: Flow, *, session_id: str, messages: Sequence[Message]
    ) -> None:
        conn = turn.conn
        assert conn is not None
        ask = Ask(
            request_id=upstream.new_request_id(),
            session_id=session_id,
            question=flatten(messages),
            model_key=turn.model_key,
            mode="agent" if turn.request.tools else self.spec.default_ask_mode,
            is_reply=bool(session_id),
            cwd=self.workspace,
        )
        if not session_id:
            ask = dataclasses.replace(
                ask, session_id=await flow.open_session(conn, ask, self.timers)
            )
        if turn.subscription is not None:
            turn.subscription.close()
        turn.asking(ask, flow)
        turn.pushes = pushes = PushQueue()
        turn.subscription = flow.subscribe(conn, pushes, ask)
        events = flow.stream(conn, pushes, ask, self.timers)
        async with contextlib.aclosing(events):
            end = await self._relay(turn, events)
        check_end(end)
        if turn.answer.empty and not end.filtered:
            reason = end.reason or "no reason given"
            raise UpstreamFailure(
                ErrorCode.UPSTREAM_ERROR, f"Lingma finished without an answer ({reason})"
            )

    async def _relay(self, turn: RuntimeChat, events: upstream.AsyncEvents) -> End:
        async for event in events:
            if isinstance(event, End):
                turn.answer.end(event)
                turn.ended(event)
                return event
            turn.answer.take(event)
        raise UpstreamFailure(ErrorCode.UPSTREAM_ERROR, "the answer ended without a finish")

    async def _stop(self, turn: RuntimeChat) -> None:
        """Tell the runtime to stop generating and wait (bounded) for the turn's finish."""
        conn, flow, ask, pushes = turn.conn, turn.flow, turn.ask, turn.pushes
        if conn is None or flow is None or ask is None or pushes is None:
            return
        if turn.upstream_done or conn.closed:
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
                turn.phase = Phase.STOPPED
            log.info("upstream turn stopped", extra={"settled": settled})

    async def _let_go(self, turn: RuntimeChat, client: RuntimeClient) -> None:
        """Unsubscribe from the connection and give a leased one back."""
        if turn.subscription is not None:
            turn.subscription.close()
            turn.subscription = None
        leased, turn.leased, turn.conn = turn.leased, None, None
        if leased is not None:
            await client.release(leased, reusable=turn.upstream_done)

    def _finished(self, turn: RuntimeChat, generation: int, flow: Flow) -> Finish:
        request, answer = turn.request, turn.answer
        session_id = turn.ask.session_id if turn.ask is not None else ""
        if self._reuse(flow) and session_id:
            history = [*request.messages, Message(role="assistant", text=answer.text)]
            key = conversation_key(request.scope, turn.model_key, history)
            self.sessions.put(key, session_id=session_id, generation=generation, flow=flow.name)
            if self.sessions.enabled:
                turn.phase = Phase.CACHED
        first = answer.first_token_at
        return Finish(
            id=request.id,
            reason=turn.finish_reason(),
            usage=Usage(
                prompt_tokens=estimate_messages_tokens(request.messages),
                completion_tokens=estimate_tokens(answer.text) + answer.reasoning.tokens,
            ),
            upstream_session=session_id,
            served_by=self.spec.name,
            model=turn.model_key,
            first_token_ms=round((first - turn.started) * 1000, 1) if first else None,
            total_ms=round((time.monotonic() - turn.started) * 1000, 1),
            session_reused=turn.reused,
        )

    def _upstream_error(self, exc: UpstreamFailure) -> ChatError:
        if exc.code is ErrorCode.NOT_LOGGED_IN:
            self._on_not_logged_in()
        retry_after = exc.retry_after
        if exc.code is ErrorCode.UPSTREAM_RATE_LIMITED:
            retry_after = retry_after or self.spec.cooldown_s
            self.metrics.rate_limited()
            self._on_rate_limited(retry_after)
        return ChatError(exc.code, exc.message, retry_after)


async def _reach(connecting: Awaitable[RpcConnection]) -> RpcConnection:
    """A connection for the chat, or UNAVAILABLE: the runtime does not take connections."""
    try:
        return await connecting
    except (RpcClosed, RpcError, OSError, TimeoutError) as exc:
        raise ChatError(ErrorCode.UNAVAILABLE, f"Lingma runtime unreachable: {exc}") from None
