"""Runs in the front: turns one worker's chat events into what the client sees.

Applies, in order: emulated tool-call parsing (declared tools only), the tool_choice policy
(required/forced hold the text back and drop it when a call was made; front/forced.py decides
what a reply without one becomes), stop sequences and the max-token budget, and usage/latency
accounting. A cloud-backend worker calls tools natively (`native=True`): no text parsing, no
held text, and each call keeps the id the cloud gave it (the follow-up turn sends that id back).
Pure and synchronous: one call per event, so relaying costs no extra task switches.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import msgspec

from front.limits import LimitHit, OutputLimiter
from front.plan import ChatPlan
from front.tool_stream import Segment, ToolTextParser
from front.tools import NO_TOOLS, ParsedCall, ToolNames
from protocol.chat import Delta, Finish, FinishReason, Reasoning, ToolCall
from protocol.tokens import TokenCount

FrontEvent = Delta | Reasoning | ToolCall
_json = msgspec.json.Encoder()


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    """How a reply ended, in the front's vocabulary: stop | length | tool_calls | stop_sequence."""

    finish_reason: str
    stop_sequence: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    served_by: str = ""
    model: str = ""
    first_token_ms: float | None = None
    total_ms: float = 0.0
    session_reused: bool = False

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(slots=True)
class Collected:
    """A whole reply, for non-streaming responses."""

    text: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    calls: list[ToolCall] = field(default_factory=list)
    outcome: Outcome | None = None


def new_call_id(prefix: str) -> str:
    return prefix + secrets.token_hex(12)


class EventPipeline:
    __slots__ = (  # one per open chat
        "_clock",
        "_held",
        "_hold_text",
        "_limiter",
        "_names",
        "_native",
        "_parser",
        "_plain",
        "_plan",
        "_started",
        "calls",
        "first_output_ms",
        "output",
    )

    def __init__(
        self, plan: ChatPlan, clock: Callable[[], float] = time.monotonic, *, native: bool = False
    ) -> None:
        self._plan = plan
        self._clock = clock
        self._started = clock()
        self._native = native
        self._names = ToolNames(t.name for t in plan.tools) if plan.tools else NO_TOOLS
        emulated = plan.parses_tools and not native
        self._parser = ToolTextParser(self._names) if emulated else None
        self._hold_text = emulated and plan.tool_choice != "auto"
        self._held: list[str] = []
        self._limiter = OutputLimiter(plan.stop, plan.max_tokens)
        # No tools and no limits: text passes through untouched (the relay's hot path).
        self._plain = self._parser is None and not self._limiter.active
        self.calls = 0
        self.output = TokenCount()
        self.first_output_ms: float | None = None

    @property
    def limited(self) -> bool:
        """A stop sequence or the token budget was hit: stop reading the worker."""
        return self._limiter.hit is not None

    def feed(self, event: object) -> list[FrontEvent]:
        if self.limited:
            return []
        if type(event) is Delta:
            return self._delta(event)
        if isinstance(event, Reasoning):
            self._count(event.text)
            return [event]
        if isinstance(event, ToolCall):
            return self._native_call(event)
        return []

    def _delta(self, event: Delta) -> list[FrontEvent]:
        if self._plain:
            self._count(event.text)
            return [event]
        if self._parser is None:
            return self._texts((event.text,))
        return self._segments(self._parser.feed(event.text))

    def finish(
        self, finish: Finish | None, served_by: str = ""
    ) -> tuple[list[FrontEvent], Outcome]:
        out: list[FrontEvent] = []
        if self._parser is not None and not self.limited:
            out += self._segments(self._parser.finish())
        if self._hold_text:
            out += self._release_held()
        if not self.limited:
            out += self._texts((self._limiter.flush(),), limit=False)
        return out, self._outcome(finish, served_by)

    def _segments(self, segments: Iterable[Segment]) -> list[FrontEvent]:
        out: list[FrontEvent] = []
        for segment in segments:
            if isinstance(segment, ParsedCall):
                out.append(self._call(segment.name, _json.encode(segment.arguments).decode()))
            elif self._hold_text:
                self._held.append(segment)
            else:
                out += self._texts((segment,))
        return out

    def _release_held(self) -> list[FrontEvent]:
        held, self._held = "".join(self._held), []
        if self.calls:
            return []  # a forced/required call was made: the surrounding prose is dropped
        return self._texts((held,))

    def _texts(self, texts: Iterable[str], *, limit: bool = True) -> list[FrontEvent]:
        out: list[FrontEvent] = []
        for text in texts:
            visible = self._limiter.feed(text) if limit else text
            if visible:
                self._count(visible)
                out.append(Delta(id=0, text=visible))
            if self.limited:
                break
        return out

    def _native_call(self, event: ToolCall) -> list[FrontEvent]:
        # Runtime-native IDE tools the client never declared are not the client's to run.
        name = self._names.match(event.name) if self._plan.parses_tools else None
        if name is None:
            return []
        call_id = event.call_id if self._native else ""
        return [self._call(name, event.arguments_json, call_id)]

    def _call(self, name: str, arguments_json: str, call_id: str = "") -> ToolCall:
        self.calls += 1
        self._count(name)
        self._count(arguments_json)
        return ToolCall(
            id=0,
            call_id=call_id or new_call_id(self._plan.call_id_prefix),
            name=name,
            arguments_json=arguments_json,
        )

    def _count(self, text: str) -> None:
        if self.first_output_ms is None:
            self.first_output_ms = (self._clock() - self._started) * 1000
        self.output.add(text)

    def _outcome(self, finish: Finish | None, served_by: str) -> Outcome:
        hit = self._limiter.hit
        if self.calls:
            reason = "tool_calls"
        elif hit is LimitHit.STOP_SEQUENCE:
            reason = "stop_sequence"
        elif hit is LimitHit.LENGTH or (finish and finish.reason is FinishReason.LENGTH):
            reason = "length"
        elif finish and finish.reason is FinishReason.CONTENT_FILTER:
            reason = "content_filter"
        else:
            reason = "stop"
        usage = finish.usage if finish else None
        prompt = usage.prompt_tokens if usage and usage.prompt_tokens else 0
        completion = usage.completion_tokens if usage and not hit else 0
        elapsed_ms = (self._clock() - self._started) * 1000
        return Outcome(
            finish_reason=reason,
            stop_sequence=self._limiter.stop_sequence,
            prompt_tokens=prompt or self._plan.prompt_tokens,
            completion_tokens=completion or self.output.tokens,
            served_by=(finish.served_by if finish else "") or served_by,
            model=finish.model if finish else "",
            first_token_ms=(finish.first_token_ms if finish else None) or self.first_output_ms,
            total_ms=(finish.total_ms if finish else 0.0) or elapsed_ms,
            session_reused=finish.session_reused if finish else False,
        )
