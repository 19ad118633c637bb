"""Runs in the worker: one ChatRequest over the cloud API, to its single Finish or Failure.

Same contract as the runtime path (worker/chat.py): admission slot, model resolution, the
request deadline, Delta / Reasoning events as the stream delivers them, native tool calls as
`ToolCall` events with the cloud's call ids once the answer is complete, and one ending.
Error rules (§14.10): an auth refusal re-reads the credential once and retries once if it
changed; a rate limit cools the account down; a 5xx, a cut stream or an empty answer before
any output is retried once here, then reported as retryable so the front tries another account;
after output, a cut stream is an error, never a complete answer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from protocol.chat import (
    ChatEvent,
    ChatRequest,
    ChatTurn,
    Delta,
    Failure,
    Finish,
    FinishReason,
    Reasoning,
    ToolCall,
    Usage,
)
from protocol.logs import request_id_var
from protocol.specs import WorkerSpec
from protocol.tokens import estimate_tokens
from protocol.vocabulary import ErrorCode
from worker.cloud import sse
from worker.cloud.access import CloudAccess
from worker.cloud.body import AUTO_MODEL, BodyInput, build_body
from worker.cloud.calls import ToolCallAssembler
from worker.cloud.client import CloudClient
from worker.cloud.credential import Credential, CredentialError
from worker.cloud.errors import CloudFailure, FailureKind, failure_for
from worker.deadline import chat_deadline
from worker.metrics import WorkerMetrics
from worker.models import ModelResolver, UnknownModel
from worker.slots import Overloaded, UpstreamSlots

log = logging.getLogger(__name__)

Emit = Callable[[ChatEvent], None]
LOCAL_RETRY_PAUSE_S = 0.5


class ChatRefused(Exception):
    def __init__(self, code: ErrorCode, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable


@dataclass
class CloudChat:
    """One chat's progress on the cloud path."""

    request: ChatRequest
    model_key: str
    started: float
    answer: list[str] = field(default_factory=list)
    reasoning_chars: int = 0
    first_token_at: float | None = None
    emitted: bool = False  # something reached the front: no more silent retries
    usage: Usage | None = None
    finish_reason: str = ""
    done: bool = False
    calls: ToolCallAssembler = field(default_factory=ToolCallAssembler)
    tool_calls: int = 0


def turns_text(turns: list[ChatTurn]) -> str:
    return "\n".join(t.text for t in turns) + "".join(
        c.arguments_json for t in turns for c in t.tool_calls
    )


class CloudChatService:
    def __init__(
        self,
        spec: WorkerSpec,
        *,
        access: CloudAccess,
        client: CloudClient,
        slots: UpstreamSlots,
        metrics: WorkerMetrics,
        runtime_models: ModelResolver,
        on_rate_limited: Callable[[float], None],
    ) -> None:
        self.spec = spec
        self.access = access
        self.client = client
        self.slots = slots
        self.metrics = metrics
        self.runtime_models = runtime_models
        self._on_rate_limited = on_rate_limited

    # ----------------------------------------------------------------- entry

    async def run(self, request: ChatRequest, emit: Emit) -> None:
        """Serve one chat; always emits exactly one Finish or Failure (also when cancelled)."""
        request_id_var.set(request.request_id)
        turn: CloudChat | None = None
        status = "ok"
        try:
            turn = CloudChat(request, self._resolve(request), time.monotonic())
            async with self.slots.slot():
                emit(await self._serve(turn, emit))
        except Overloaded as exc:
            status = ErrorCode.OVERLOADED.value
            emit(self._failure(request, ErrorCode.OVERLOADED, str(exc), exc.retry_after))
        except ChatRefused as exc:
            status = exc.code.value
            emit(self._failure(request, exc.code, exc.message, retryable=exc.retryable))
        except CloudFailure as exc:
            status = exc.error_code.value
            emit(self._from_cloud(request, turn, exc))
        except asyncio.CancelledError:
            status = ErrorCode.CANCELLED.value
            emit(self._failure(request, ErrorCode.CANCELLED, "cancelled by the caller"))
        finally:
            self._account(turn, request, status)

    def _failure(
        self,
        request: ChatRequest,
        code: ErrorCode,
        message: str,
        retry_after: float | None = None,
        *,
        retryable: bool = False,
    ) -> Failure:
        return Failure(
            id=request.id,
            code=code,
            message=message,
            retry_after=retry_after,
            served_by=self.spec.name,
            retryable=retryable,
        )

    def _from_cloud(
        self, request: ChatRequest, turn: CloudChat | None, exc: CloudFailure
    ) -> Failure:
        retry_after = exc.retry_after
        if exc.kind is FailureKind.RATE_LIMITED:
            retry_after = retry_after or self.spec.cooldown_s
            self.metrics.rate_limited()
            self._on_rate_limited(retry_after)
        started = turn is not None and turn.emitted
        retryable = not started and (exc.may_succeed_elsewhere or exc.kind is FailureKind.AUTH)
        return self._failure(request, exc.error_code, exc.message, retry_after, retryable=retryable)

    def _resolve(self, request: ChatRequest) -> str:
        if not any(t.text.strip() or t.images or t.tool_calls for t in request.turns):
            raise ChatRefused(ErrorCode.BAD_REQUEST, "the conversation has no content")
        resolver = self.access.resolver if self.access.models else self.runtime_models
        try:
            return resolver.resolve(request.model)
        except UnknownModel as exc:
            if request.model.strip().lower() == AUTO_MODEL:  # the cloud's own choice (key "")
                return AUTO_MODEL
            raise ChatRefused(ErrorCode.UNKNOWN_MODEL, str(exc)) from None

    def _account(self, turn: CloudChat | None, request: ChatRequest, status: str) -> None:
        if turn is None:
            self.metrics.requests.labels(model="unresolved", status=status).inc()
            log.info("chat refused: %s", status, extra={"model": request.model})
            return
        first, total_s = turn.first_token_at, time.monotonic() - turn.started
        prompt, completion = self._usage(turn)
        self.metrics.chat_done(
            model=turn.model_key,
            status=status,
            total_s=total_s,
            ttft_s=first - turn.started if first is not None else None,
            prompt_tokens=prompt,
            completion_tokens=completion,
        )
        log.info(
            "chat %s",
            status,
            extra={"model": turn.model_key, "total_ms": round(total_s * 1000, 1)},
        )

    # ----------------------------------------------------------------- one chat

    async def _serve(self, turn: CloudChat, emit: Emit) -> Finish:
        scope = asyncio.timeout_at(chat_deadline(turn.request, self.spec))
        try:
            async with scope:
                await self._attempts(turn, emit)
        except TimeoutError:
            if scope.expired():
                raise ChatRefused(
                    ErrorCode.DEADLINE_EXCEEDED, "the request deadline passed"
                ) from None
            raise
        return self._finished(turn)

    def _credential(self) -> Credential:
        try:
            return self.access.credential()
        except CredentialError as exc:
            raise ChatRefused(
                ErrorCode.NOT_LOGGED_IN, f"cloud credential unusable: {exc}", retryable=True
            ) from None

    async def _attempts(self, turn: CloudChat, emit: Emit) -> None:
        credential = self._credential()
        base_url = self.access.base_url
        images = await self._upload_images(turn.request, base_url, credential)
        auth_retried = server_retried = False
        while True:
            try:
                await self._attempt(turn, base_url, credential, images, emit)
            except CloudFailure as exc:
                if turn.emitted:
                    raise
                if exc.kind is FailureKind.AUTH and not auth_retried:
                    auth_retried = True
                    fresh = self.access.after_auth_failure(credential, exc)
                    if fresh is None:
                        raise
                    credential = fresh
                    continue
                if exc.may_succeed_elsewhere and not server_retried:
                    server_retried = True
                    log.info("cloud attempt failed before any output (%s): once more", exc)
                    await asyncio.sleep(LOCAL_RETRY_PAUSE_S)
                    continue
                raise
            return

    async def _upload_images(
        self, request: ChatRequest, base_url: str, credential: Credential
    ) -> dict[int, list[str]]:
        urls: dict[int, list[str]] = {}
        for index, chat_turn in enumerate(request.turns):
            for image in chat_turn.images:
                uploaded = await self.client.upload_image(base_url, credential, image)
                urls.setdefault(index, []).append(uploaded)
        return urls

    async def _attempt(
        self,
        turn: CloudChat,
        base_url: str,
        credential: Credential,
        images: dict[int, list[str]],
        emit: Emit,
    ) -> None:
        request = turn.request
        model = next((m for m in self.access.models if m.key == turn.model_key), None)
        _rid, body = build_body(
            BodyInput(
                turns=request.turns,
                model_key=turn.model_key,
                model=model,
                tools=request.tools,
                tool_choice=request.tool_choice,
                temperature=request.temperature,
                reasoning_effort=request.reasoning_effort,
                image_urls=images,
            )
        )
        turn.calls, turn.finish_reason, turn.usage, turn.done = ToolCallAssembler(), "", None, False
        async with self.client.chat(base_url, credential, body) as events:
            await self._relay(turn, events, emit)
        self._complete(turn, emit)

    async def _relay(
        self, turn: CloudChat, events: AsyncIterator[sse.CloudEvent], emit: Emit
    ) -> None:
        rid = turn.request.id
        async for event in events:
            if isinstance(event, sse.TextPiece):
                self._mark(turn)
                turn.answer.append(event.text)
                emit(Delta(id=rid, text=event.text))
            elif isinstance(event, sse.ReasoningPiece):
                self._mark(turn)
                turn.reasoning_chars += len(event.text)
                emit(Reasoning(id=rid, text=event.text))
            elif isinstance(event, sse.ToolFragment):
                turn.calls.add(event)
            elif isinstance(event, sse.FinishSeen):
                turn.finish_reason = event.reason
            elif isinstance(event, sse.UsageSeen):
                turn.usage = Usage(
                    prompt_tokens=event.prompt_tokens, completion_tokens=event.completion_tokens
                )
            elif isinstance(event, sse.DoneSeen):
                turn.done = True
                return
            elif isinstance(event, sse.InBandError):
                if turn.finish_reason:  # an error after a complete answer does not undo it (QD)
                    log.info("in-band error %d after the finish: ignored", event.status)
                    continue
                raise failure_for(event.status, event.code, event.message, where="chat stream")

    @staticmethod
    def _mark(turn: CloudChat) -> None:
        turn.emitted = True
        if turn.first_token_at is None:
            turn.first_token_at = time.monotonic()

    def _complete(self, turn: CloudChat, emit: Emit) -> None:
        """The stream ended: a whole answer emits its tool calls; anything else is a failure."""
        if not (turn.done or turn.finish_reason):
            where = "mid-answer" if turn.emitted else "before any output"
            raise CloudFailure(
                FailureKind.CUT, f"the cloud stream ended without a finish ({where})"
            )
        calls = turn.calls.calls()
        if not turn.answer and not calls:
            raise CloudFailure(FailureKind.EMPTY, "the cloud finished with an empty answer")
        for call in calls:
            self._mark(turn)
            emit(
                ToolCall(
                    id=turn.request.id,
                    call_id=call.call_id,
                    name=call.name,
                    arguments_json=call.arguments_json,
                )
            )
        turn.tool_calls = len(calls)

    def _usage(self, turn: CloudChat) -> tuple[int, int]:
        usage = turn.usage
        if usage is not None and (usage.prompt_tokens or usage.completion_tokens):
            return usage.prompt_tokens, usage.completion_tokens
        return (
            estimate_tokens(turns_text(turn.request.turns)),
            estimate_tokens("".join(turn.answer)) + turn.reasoning_chars // 4,
        )

    def _finished(self, turn: CloudChat) -> Finish:
        if turn.tool_calls:
            reason = FinishReason.TOOL_CALLS
        elif turn.finish_reason == "length":
            reason = FinishReason.LENGTH
        else:
            reason = FinishReason.STOP
        prompt, completion = self._usage(turn)
        first = turn.first_token_at
        return Finish(
            id=turn.request.id,
            reason=reason,
            usage=Usage(prompt_tokens=prompt, completion_tokens=completion),
            served_by=self.spec.name,
            model=turn.model_key,
            first_token_ms=round((first - turn.started) * 1000, 1) if first else None,
            total_ms=round((time.monotonic() - turn.started) * 1000, 1),
        )
