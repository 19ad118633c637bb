"""Runs in the worker: one ChatRequest from its upstream slot to its single Finish or Failure.

The same for both backends: the chat's request id in every log line, its model resolved, a
concurrency slot (OVERLOADED after the queue timeout), the chat's deadline (worker/deadline.py;
DEADLINE_EXCEEDED when it passes; UPSTREAM_TIMEOUT for the upstream's own silence), exactly one
Finish or Failure signed with this account (also when cancelled), an upstream rate limit
cooling the account down, and the account's metrics and log line. How the answer is had is the
backend's `ChatPath`: the runtime's flows (worker/runtime_path.py, lingma-protocol.md §5) or
the cloud API (worker/cloud/path.py, §14).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from protocol.chat import ChatEvent, ChatRequest, Failure, Finish, FinishReason, Usage
from protocol.logs import request_id_var
from protocol.specs import WorkerSpec
from protocol.vocabulary import ErrorCode
from worker.deadline import chat_deadline
from worker.metrics import WorkerMetrics
from worker.slots import Overloaded, UpstreamSlots

log = logging.getLogger(__name__)

Emit = Callable[[ChatEvent], None]


class ChatError(Exception):
    """How a chat failed, in the gateway's codes. `retryable`: nothing reached the caller and
    another account may well succeed, so the front tries the next one."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        retry_after: float | None = None,
        *,
        retryable: bool = False,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after = retry_after
        self.retryable = retryable


@dataclass(frozen=True, slots=True)
class Answered:
    """How a chat's answer ended, as its path saw it; the runner makes the Finish of it."""

    reason: FinishReason
    usage: Usage
    upstream_session: str = ""
    session_reused: bool = False


class ChatRecord(Protocol):
    """What the runner reads of any path's record of one chat."""

    request: ChatRequest
    model_key: str
    started: float  # monotonic

    @property
    def first_token_at(self) -> float | None: ...

    def usage(self) -> Usage:
        """The account's own figures (metrics, stats) for this chat, so far."""
        ...

    def log_fields(self) -> dict[str, Any]: ...


C = TypeVar("C", bound=ChatRecord)


class ChatPath(Protocol[C]):
    """How one backend answers a chat."""

    def begin(self, request: ChatRequest, emit: Emit) -> C:
        """The chat's record, its model resolved; ChatError when it cannot be served at all."""
        ...

    async def answer(self, chat: C) -> Answered:
        """Relay the answer through the record's `emit`; ChatError when it fails."""
        ...

    async def stop(self, chat: C) -> None:
        """Cancelled or timed out: have the upstream stop generating (best effort)."""
        ...

    async def release(self, chat: C) -> None:
        """Give back what the chat holds upstream (a connection), however it ended."""
        ...

    def ended(self, chat: C) -> None:
        """After the chat's last event: let go of what it leaves behind upstream."""
        ...


class ChatRunner(Generic[C]):
    def __init__(
        self,
        spec: WorkerSpec,
        path: ChatPath[C],
        *,
        metrics: WorkerMetrics,
        on_rate_limited: Callable[[float], None],
    ) -> None:
        self.spec = spec
        self.path = path
        self.metrics = metrics
        self.slots = UpstreamSlots(spec.max_concurrency, spec.queue_timeout_s)
        self._on_rate_limited = on_rate_limited

    async def run(self, request: ChatRequest, emit: Emit) -> None:
        """Serve one chat; always emits exactly one Finish or Failure (also when cancelled)."""
        chat: C | None = None
        status = "ok"
        request_id_var.set(request.request_id)  # this task's own context: every line carries it
        try:
            chat = self.path.begin(request, emit)
            async with self.slots.slot():
                emit(self._finish(chat, await self._answer(chat)))
        except Overloaded as exc:
            status = ErrorCode.OVERLOADED.value
            emit(self.failure(request, ErrorCode.OVERLOADED, str(exc), exc.retry_after))
        except ChatError as exc:
            status = exc.code.value
            retry_after = exc.retry_after
            if exc.code is ErrorCode.UPSTREAM_RATE_LIMITED:
                retry_after = self._cool_down(retry_after)
            emit(self.failure(request, exc.code, exc.message, retry_after, exc.retryable))
        except asyncio.CancelledError:
            status = ErrorCode.CANCELLED.value
            emit(self.failure(request, ErrorCode.CANCELLED, "cancelled by the caller"))
        finally:
            self._account(chat, request, status)
            if chat is not None:
                self.path.ended(chat)

    def failure(
        self,
        request: ChatRequest,
        code: ErrorCode,
        message: str,
        retry_after: float | None = None,
        retryable: bool = False,
    ) -> Failure:
        """The chat's Failure event, signed with this account (also for refusals before a run)."""
        return Failure(
            id=request.id,
            code=code,
            message=message,
            retry_after=retry_after,
            served_by=self.spec.name,
            retryable=retryable,
        )

    async def _answer(self, chat: C) -> Answered:
        deadline = asyncio.timeout_at(chat_deadline(chat.request, self.spec))
        try:
            async with deadline:
                return await self.path.answer(chat)
        except TimeoutError:
            await self.path.stop(chat)
            if deadline.expired():
                raise ChatError(
                    ErrorCode.DEADLINE_EXCEEDED, "the request deadline passed"
                ) from None
            raise ChatError(ErrorCode.UPSTREAM_TIMEOUT, "Lingma did not answer in time") from None
        except asyncio.CancelledError:
            await self.path.stop(chat)
            raise
        finally:
            await self.path.release(chat)

    def _finish(self, chat: C, answered: Answered) -> Finish:
        first = chat.first_token_at
        return Finish(
            id=chat.request.id,
            reason=answered.reason,
            usage=answered.usage,
            upstream_session=answered.upstream_session,
            served_by=self.spec.name,
            model=chat.model_key,
            first_token_ms=round((first - chat.started) * 1000, 1) if first else None,
            total_ms=round((time.monotonic() - chat.started) * 1000, 1),
            session_reused=answered.session_reused,
        )

    def _cool_down(self, retry_after: float | None) -> float:
        """An upstream rate limit: the account rests (Retry-After, else `cooldown_s`)."""
        wait = retry_after or self.spec.cooldown_s
        self.metrics.rate_limited()
        self._on_rate_limited(wait)
        return wait

    def _account(self, chat: C | None, request: ChatRequest, status: str) -> None:
        if chat is None:
            self.metrics.requests.labels(model="unresolved", status=status).inc()
            log.info("chat refused: %s", status, extra={"model": request.model})
            return
        first = chat.first_token_at
        total_s = time.monotonic() - chat.started
        usage = chat.usage()
        self.metrics.chat_done(
            model=chat.model_key,
            status=status,
            total_s=total_s,
            ttft_s=first - chat.started if first is not None else None,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
        )
        extra = {"model": chat.model_key, "total_ms": round(total_s * 1000, 1)}
        log.info("chat %s", status, extra={**extra, **chat.log_fields()})
