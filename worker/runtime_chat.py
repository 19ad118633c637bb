"""Runs in the worker: one chat's upstream progress, and the bounds it runs under.

A `RuntimeChat` records what was asked upstream, on which connection, under which
subscription, and how far its turn got (one `Phase`); the chat service (worker/chat.py) drives
it. `timers_from` turns the worker's
spec into the turn's clocks (worker/upstream.py).
"""

from __future__ import annotations

import enum
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
    def __init__(self, code: ErrorCode, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after = retry_after


def timers_from(spec: WorkerSpec) -> Timers:
    return Timers(
        call_s=spec.rpc_timeout_s,
        setup_s=spec.setup_timeout_s,
        first_token_s=spec.first_token_timeout_s,
        silence_s=spec.silence_timeout_s,
        legacy_idle_end_s=spec.legacy_idle_end_s,
    )


class Phase(enum.Enum):
    """Where the chat's current ask is upstream."""

    PREPARING = "preparing"  # nothing asked yet (or the last attempt's connection was lost)
    ASKING = "asking"  # an ask is upstream and its turn not over
    ENDED = "ended"  # the runtime ended the turn (`end` says how)
    STOPPED = "stopped"  # we stopped the turn early and the runtime confirmed its end
    CACHED = "cached"  # ended, and its upstream session went into the cache for the next turn


class CacheLookup(enum.Enum):
    """The first session-cache lookup of the chat (counted once in the metrics)."""

    NOT_YET = "not_yet"
    HIT = "hit"
    MISS = "miss"


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
    phase: Phase = Phase.PREPARING
    end: End | None = None  # how the runtime ended the turn, once it did
    lookup: CacheLookup = CacheLookup.NOT_YET

    def asking(self, ask: Ask, flow: Flow) -> None:
        self.ask, self.flow, self.end, self.phase = ask, flow, None, Phase.ASKING

    def ended(self, end: End) -> None:
        self.end, self.phase = end, Phase.ENDED

    @property
    def upstream_done(self) -> bool:
        """The runtime's turn is over: its connection may serve another ask."""
        return self.phase in (Phase.ENDED, Phase.STOPPED, Phase.CACHED)

    @property
    def reused(self) -> bool:
        """The ask continues a cached upstream session (sends only the latest turn)."""
        return self.ask is not None and self.ask.is_reply

    def finish_reason(self) -> FinishReason:
        if self.answer.tool_calls:
            return FinishReason.TOOL_CALLS
        if self.end is not None and self.end.filtered:
            return FinishReason.CONTENT_FILTER
        return FinishReason.STOP
