"""Runs in the worker: one chat's upstream progress, and the bounds it runs under.

A `RuntimeChat` records what was asked upstream, on which connection, under which subscription, and
how it ended; the chat service (worker/chat.py) drives it. `timers_from` turns the worker's
spec into the turn's clocks (worker/upstream.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.chat import ChatRequest, FinishReason
from protocol.specs import WorkerSpec
from protocol.vocabulary import ErrorCode
from worker.acp import AcpFlow
from worker.answer import Answer
from worker.legacy import LegacyFlow
from worker.routes import Subscription
from worker.rpc import RpcConnection
from worker.upstream import Ask, End, PushQueue, Timers

Flow = LegacyFlow | AcpFlow


class ChatError(Exception):
    def __init__(
        self,
        code: ErrorCode,
        message: str,
        retry_after: float | None = None,
        *,
        retryable: bool = False,  # nothing was asked upstream; another account may serve it
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after = retry_after
        self.retryable = retryable


def timers_from(spec: WorkerSpec) -> Timers:
    return Timers(
        call_s=spec.rpc_timeout_s,
        setup_s=spec.setup_timeout_s,
        first_token_s=spec.first_token_timeout_s,
        silence_s=spec.silence_timeout_s,
        legacy_idle_end_s=spec.legacy_idle_end_s,
    )


@dataclass
class RuntimeChat:
    """One chat's progress: what was asked upstream, on which connection, what came back."""

    request: ChatRequest
    model_key: str
    started: float
    answer: Answer
    ask: Ask | None = None
    flow: Flow | None = None
    conn: RpcConnection | None = None
    leased: RpcConnection | None = None  # a legacy ask's own connection, given back at the end
    pushes: PushQueue | None = None
    subscription: Subscription | None = None
    end: End | None = None  # how the runtime ended the turn, once it did
    settled: bool = False  # stopped early, and the runtime confirmed the end of the turn
    looked_up: bool = False
    reused: bool = False
    kept: bool = False  # its upstream session went into the cache for the next turn

    @property
    def upstream_done(self) -> bool:
        """The runtime's turn is over: its connection may serve another ask."""
        return self.end is not None or self.settled

    def finish_reason(self) -> FinishReason:
        if self.answer.tool_calls:
            return FinishReason.TOOL_CALLS
        if self.end is not None and self.end.filtered:
            return FinishReason.CONTENT_FILTER
        return FinishReason.STOP
