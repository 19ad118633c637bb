"""Runs in the worker: one ChatRequest from admission to its single Finish or Failure.

Order of work: resolve the model, take a concurrency slot (or fail OVERLOADED after the queue
timeout), lease a runtime connection, look the conversation prefix up in the session cache, run
the upstream flow (ACP or legacy; AUTO probes ACP once and remembers a -32601), translate its
events into Delta / Reasoning / ToolCall, and map how it ended to a Finish or an ErrorCode.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from protocol.logs import request_id_var
from protocol.messages import (
    ChatEvent,
    ChatFlow,
    ChatRequest,
    Delta,
    ErrorCode,
    Failure,
    Finish,
    FinishReason,
    Message,
    Reasoning,
    ToolCall,
    Usage,
    WorkerSpec,
)
from protocol.tokens import TokenCount, estimate_messages_tokens, estimate_tokens
from worker import flows, upstream
from worker.admission import Admission, Overloaded
from worker.flows import AcpFlow, LegacyFlow
from worker.metrics import WorkerMetrics
from worker.models import ModelResolver, UnknownModel
from worker.pool import LingmaClient
from worker.prompt import flatten, has_text
from worker.rpc import RpcClosed, RpcConnection, RpcError
from worker.sessions import SessionCache, SessionEntry, conversation_key, split_latest_turn
from worker.think import Part, ThinkSplitter
from worker.upstream import Ask, End, NoAcp, PushQueue, UpstreamFailure

log = logging.getLogger(__name__)

Emit = Callable[[ChatEvent], None]
Flow = LegacyFlow | AcpFlow


class ChatError(Exception):
    def __init__(self, code: ErrorCode, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after = retry_after


@dataclass
class Turn:
    """One chat's progress: what was asked upstream and what came back."""

    request: ChatRequest
    model_key: str
    started: float
    ask: Ask | None = None
    pushes: PushQueue | None = None
    settled: bool = False  # stopped early, but the runtime confirmed the end of the turn
    looked_up: bool = False
    reused: bool = False
    answer: list[str] = field(default_factory=list)
    reasoning: TokenCount = field(default_factory=TokenCount)
    first_token_at: float | None = None
    tool_calls: int = 0
    kept: bool = False  # its upstream session went into the cache for the next turn


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
        self.admission = Admission(spec.max_concurrency, spec.queue_timeout_s)
        self.flow_mode = spec.chat_flow
        self.workspace = str(Path(spec.work_dir) / "workspace")
        self._on_rate_limited = on_rate_limited
        self._on_not_logged_in = on_not_logged_in
        self._on_discard = on_discard  # (session id, binary generation): delete it upstream

    async def run(
        self, request: ChatRequest, client: LingmaClient, generation: int, emit: Emit
    ) -> None:
        """Serve one chat; always emits exactly one Finish or Failure (also when cancelled)."""
        turn: Turn | None = None
        status = "ok"
        request_id_var.set(request.request_id)  # this task's own context: every line carries it
        try:
            turn = Turn(request, self._resolve(request), time.monotonic())
            async with self.admission.slot():
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
            if turn is not None and turn.ask is not None and not turn.kept:
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

    def _account(self, turn: Turn | None, request: ChatRequest, status: str) -> None:
        if turn is None:
            self.metrics.requests.labels(model="unresolved", status=status).inc()
            log.info("chat refused: %s", status, extra={"model": request.model})
            return
        first = turn.first_token_at
        total_s = time.monotonic() - turn.started
        self.metrics.chat_done(
            model=turn.model_key,
            status=status,
            total_s=total_s,
            ttft_s=first - turn.started if first is not None else None,
            prompt_tokens=estimate_messages_tokens(request.messages),
            completion_tokens=estimate_tokens("".join(turn.answer)),
        )
        log.info(
            "chat %s",
            status,
            extra={
                "model": turn.model_key,
                "total_ms": round(total_s * 1000, 1),
                "session_reused": turn.reused,
                "upstream_request": turn.ask.request_id if turn.ask else "",
            },
        )

    # ----------------------------------------------------------------- one upstream turn

    async def _serve(self, turn: Turn, client: LingmaClient, generation: int, emit: Emit) -> Finish:
        try:
            connection = await client.acquire()
        except (RpcClosed, RpcError, OSError, TimeoutError) as exc:
            raise ChatError(ErrorCode.UNAVAILABLE, f"Lingma runtime unreachable: {exc}") from None
        reusable = False
        try:
            flow = await self._converse(turn, connection, generation, emit)
            reusable = True
            return self._finished(turn, generation, flow)
        except UpstreamFailure as exc:
            raise self._upstream_error(exc) from None
        except (RpcClosed, RpcError) as exc:
            raise ChatError(ErrorCode.UPSTREAM_ERROR, f"Lingma runtime: {exc}") from None
        finally:
            await client.release(connection, reusable=reusable or turn.settled)

    async def _converse(
        self, turn: Turn, connection: RpcConnection, generation: int, emit: Emit
    ) -> Flow:
        deadline = asyncio.timeout_at(self._deadline(turn.request))
        flow: Flow = LegacyFlow() if self.flow_mode is ChatFlow.LEGACY else AcpFlow()
        try:
            async with deadline:
                try:
                    await self._ask_with_cache(turn, connection, flow, generation, emit)
                except NoAcp:
                    # Only an operator's explicit `chat_flow = "acp"` forbids the fallback. The
                    # mode is read now, not before the ask: a concurrent first chat may have
                    # switched AUTO to LEGACY meanwhile, and this chat must follow it.
                    if self.flow_mode is ChatFlow.ACP:
                        raise UpstreamFailure(
                            ErrorCode.UPSTREAM_ERROR, "this Lingma runtime has no ACP session/new"
                        ) from None
                    if self.flow_mode is ChatFlow.AUTO:
                        log.info("runtime lacks session/new: legacy chat/ask from now on")
                        self.flow_mode = ChatFlow.LEGACY
                    flow = LegacyFlow()
                    await self._ask_with_cache(turn, connection, flow, generation, emit)
        except TimeoutError:
            await self._stop(connection, flow, turn)
            if deadline.expired():
                raise ChatError(
                    ErrorCode.DEADLINE_EXCEEDED, "the request deadline passed"
                ) from None
            raise ChatError(ErrorCode.UPSTREAM_TIMEOUT, "Lingma did not answer in time") from None
        except asyncio.CancelledError:
            await self._stop(connection, flow, turn)
            raise
        return flow

    def _deadline(self, request: ChatRequest) -> float:
        loop_now = asyncio.get_running_loop().time()
        limit = loop_now + self.spec.request_timeout_s
        if request.deadline > 0:
            limit = min(limit, loop_now + (request.deadline - time.time()))
        return limit

    def _lookup(
        self, turn: Turn, prefix: list[Message], generation: int, flow: Flow
    ) -> SessionEntry | None:
        if not (self.spec.session_reuse and self.sessions.enabled and prefix):
            return None
        key = conversation_key(turn.request.scope, turn.model_key, prefix)
        entry = self.sessions.take(key, generation=generation, flow=flow.name)
        if not turn.looked_up:
            turn.looked_up = True
            self.metrics.session_lookup(entry is not None)
        return entry

    async def _ask_with_cache(
        self, turn: Turn, connection: RpcConnection, flow: Flow, generation: int, emit: Emit
    ) -> None:
        messages = turn.request.messages
        prefix, latest = split_latest_turn(messages)
        entry = self._lookup(turn, prefix, generation, flow)
        if entry is None:
            await self._ask(turn, connection, flow, session_id="", messages=messages, emit=emit)
            return
        turn.reused = True
        try:
            await self._ask(
                turn, connection, flow, session_id=entry.session_id, messages=latest, emit=emit
            )
        except UpstreamFailure as exc:
            if not exc.session_rejected or turn.first_token_at is not None:
                raise
            log.info(
                "runtime forgot session %s: resending the whole conversation", entry.session_id
            )
            turn.reused = False
            await self._ask(turn, connection, flow, session_id="", messages=messages, emit=emit)

    async def _ask(
        self,
        turn: Turn,
        connection: RpcConnection,
        flow: Flow,
        *,
        session_id: str,
        messages: Sequence[Message],
        emit: Emit,
    ) -> None:
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
            new_id = await flow.open_session(connection, ask, self.spec.rpc_timeout_s)
            ask = dataclasses.replace(ask, session_id=new_id)
        turn.ask = ask
        turn.pushes = pushes = PushQueue(connection)
        events = flow.stream(connection, pushes, ask, self.spec.rpc_timeout_s)
        async with contextlib.aclosing(events):
            end = await self._relay(turn, events, emit)
        upstream.check_end(end)

    async def _relay(self, turn: Turn, events: AsyncIterator[upstream.Event], emit: Emit) -> End:
        splitter = ThinkSplitter()
        async for event in events:
            if isinstance(event, upstream.Text):
                self._emit_parts(turn, splitter.feed(event.text), emit)
            elif isinstance(event, upstream.Thought) and event.text:
                self._emit_parts(turn, [(Part.REASONING, event.text)], emit)
            elif isinstance(event, upstream.NativeTool):
                self._mark_first_token(turn)
                turn.tool_calls += 1
                emit(
                    ToolCall(
                        id=turn.request.id,
                        call_id=event.call_id,
                        name=event.name,
                        arguments_json=event.arguments_json,
                    )
                )
            elif isinstance(event, End):
                parts = splitter.flush()
                if not turn.answer and not parts and event.full_answer:
                    parts = [(Part.TEXT, event.full_answer)]  # nothing streamed: use the summary
                self._emit_parts(turn, parts, emit)
                return event
        raise UpstreamFailure(ErrorCode.UPSTREAM_ERROR, "the answer ended without a finish")

    def _emit_parts(self, turn: Turn, parts: list[tuple[Part, str]], emit: Emit) -> None:
        for part, text in parts:
            self._mark_first_token(turn)
            if part is Part.TEXT:
                turn.answer.append(text)
                emit(Delta(id=turn.request.id, text=text))
            else:
                turn.reasoning.add(text)
                emit(Reasoning(id=turn.request.id, text=text))

    @staticmethod
    def _mark_first_token(turn: Turn) -> None:
        if turn.first_token_at is None:
            turn.first_token_at = time.monotonic()

    async def _stop(self, connection: RpcConnection, flow: Flow, turn: Turn) -> None:
        """Tell the runtime to stop generating and wait (bounded) for the turn's finish."""
        if turn.ask is None or turn.pushes is None or connection.closed:
            return
        try:
            await asyncio.shield(flow.stop(connection, turn.ask))
            turn.settled = await flows.settle(turn.pushes, turn.ask, upstream.STOP_SETTLE_S)
        except Exception as exc:  # the stop is best effort: the chat already has its outcome
            log.info("stopping the upstream turn failed: %r", exc)
        else:
            log.info("upstream turn stopped", extra={"settled": turn.settled})

    def _finished(self, turn: Turn, generation: int, flow: Flow) -> Finish:
        request = turn.request
        answer = "".join(turn.answer)
        session_id = turn.ask.session_id if turn.ask is not None else ""
        if self.spec.session_reuse and session_id:
            history = [*request.messages, Message(role="assistant", text=answer)]
            key = conversation_key(request.scope, turn.model_key, history)
            self.sessions.put(key, session_id=session_id, generation=generation, flow=flow.name)
            turn.kept = self.sessions.enabled
        first = turn.first_token_at
        return Finish(
            id=request.id,
            reason=FinishReason.TOOL_CALLS if turn.tool_calls else FinishReason.STOP,
            usage=Usage(
                prompt_tokens=estimate_messages_tokens(request.messages),
                completion_tokens=estimate_tokens(answer) + turn.reasoning.tokens,
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
