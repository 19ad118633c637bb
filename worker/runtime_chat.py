"""Runs in the worker: one chat's progress on the runtime path, and the bounds it runs under.

A `RuntimeChat` records which runtime it runs on (the client and binary generation of the moment
it began), what was asked upstream, on which connection, under which subscription, and how far
its turn got (one `Phase`); worker/runtime_path.py drives it. `timers_from` turns the worker's
spec into the turn's clocks (worker/upstream.py).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from protocol.chat import ChatRequest, FinishReason, Usage
from protocol.specs import WorkerSpec
from protocol.tokens import estimate_messages_tokens, estimate_tokens
from worker.acp import AcpFlow
from worker.answer import Answer
from worker.legacy import LegacyFlow
from worker.routes import Subscription
from worker.rpc import RpcConnection
from worker.runtime_client import RuntimeClient
from worker.upstream import Ask, End, PushQueue, Timers

Flow = LegacyFlow | AcpFlow


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


@dataclass(slots=True)  # one per open chat: no per-instance __dict__
class RuntimeChat:
    """One chat's progress: what was asked upstream, on which connection, what came back."""

    request: ChatRequest
    model_key: str
    started: float
    answer: Answer
    client: RuntimeClient  # the runtime as it was when the chat began
    generation: int  # that runtime's binary start
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

    @property
    def first_token_at(self) -> float | None:
        return self.answer.first_token_at

    def finish_reason(self) -> FinishReason:
        if self.answer.tool_calls:
            return FinishReason.TOOL_CALLS
        if self.end is not None and self.end.filtered:
            return FinishReason.CONTENT_FILTER
        return FinishReason.STOP

    def usage(self) -> Usage:
        """For the account's own figures: the runtime's context_usage usedTokens when it sent
        one, else our estimate. What a client is told stays the shared estimate
        (protocol/tokens.py), so count_tokens and every reply agree on one prompt."""
        prompt = self.answer.used_tokens or estimate_messages_tokens(self.request.messages)
        return Usage(prompt_tokens=prompt, completion_tokens=estimate_tokens(self.answer.text))

    def log_fields(self) -> dict[str, Any]:
        return {
            "session_reused": self.reused,
            "flow": self.flow.name if self.flow else "",
            "upstream_request": self.ask.request_id if self.ask else "",
        }
