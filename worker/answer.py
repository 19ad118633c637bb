"""Runs in the worker: one chat's answer as it arrives, turned into Delta / Reasoning / ToolCall.

Think fences are split off as reasoning (worker/think.py). A streamed request gets every piece
at once; a non-streamed one is held until the end, so `chat/answer.overwrite: true` can
replace what came so far (lingma-protocol.md §5.3; for a streamed answer what was sent cannot
be taken back, so an overwrite is only logged). Also counts what the Finish reports: text,
reasoning, tool calls, the first token's time and the runtime's `context_usage`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from protocol.chat import ChatEvent, Delta, Reasoning, ToolCall
from protocol.tokens import TokenCount
from worker import upstream
from worker.think import Part, ThinkSplitter

log = logging.getLogger(__name__)

Emit = Callable[[ChatEvent], None]


class Answer:
    __slots__ = (
        "_emit",
        "_held",
        "_id",
        "_splitter",
        "_stream",
        "first_token_at",
        "reasoning",
        "text_parts",
        "tool_calls",
        "used_tokens",
    )

    def __init__(self, request_id: int, *, stream: bool, emit: Emit) -> None:
        self._id = request_id
        self._stream = stream
        self._emit = emit
        self._splitter = ThinkSplitter()
        self._held: list[ChatEvent] = []  # non-streamed: everything until the end
        self.text_parts: list[str] = []
        self.reasoning = TokenCount()  # the shared estimate (protocol/tokens.py)
        self.first_token_at: float | None = None
        self.tool_calls = 0
        self.used_tokens = 0  # the runtime's context_usage.usedTokens, 0 when it sent none

    @property
    def text(self) -> str:
        return "".join(self.text_parts)

    @property
    def sent(self) -> bool:
        """Has any of it reached the client? (A non-streamed answer is held until the end.)"""
        return self._stream and self.first_token_at is not None

    def restart(self) -> None:
        """Forget what came so far (only before anything was sent): the turn is asked again."""
        assert not self.sent
        self._splitter = ThinkSplitter()
        self._held.clear()
        self.text_parts.clear()
        self.reasoning = TokenCount()
        self.tool_calls = self.used_tokens = 0
        self.first_token_at = None

    @property
    def empty(self) -> bool:
        """Nothing a client could use: no text and no tool call."""
        return not self.tool_calls and not any(part.strip() for part in self.text_parts)

    def take(self, event: upstream.Event) -> None:
        """One upstream event (anything but End)."""
        if isinstance(event, upstream.Text):
            self._parts(self._splitter.feed(event.text))
        elif isinstance(event, upstream.Overwrite):
            self._overwrite(event.text)
        elif isinstance(event, upstream.Thought) and event.text:
            self._parts([(Part.REASONING, event.text)])
        elif isinstance(event, upstream.NativeTool):
            self._first_token()
            self.tool_calls += 1
            call = ToolCall(
                id=self._id,
                call_id=event.call_id,
                name=event.name,
                arguments_json=event.arguments_json,
            )
            self._out(call)
        elif isinstance(event, upstream.ContextUsage) and event.used_tokens > 0:
            self.used_tokens = event.used_tokens

    def end(self, end: upstream.End) -> None:
        """The turn ended: flush what the splitter held and, if nothing streamed, the summary."""
        parts = self._splitter.flush()
        if not self.text_parts and not parts and end.full_answer:
            parts = [(Part.TEXT, end.full_answer)]  # nothing streamed: use the summary
        self._parts(parts)
        held, self._held = self._held, []
        for event in held:
            self._emit(event)

    def _overwrite(self, text: str) -> None:
        if self._stream:
            log.warning(
                "the runtime overwrote a streamed answer (%d chars sent): cannot take them back",
                sum(len(part) for part in self.text_parts),
            )
            return
        self._held = [event for event in self._held if not isinstance(event, Delta)]
        self.text_parts.clear()
        self._splitter = ThinkSplitter()
        self._parts(self._splitter.feed(text))

    def _parts(self, parts: list[tuple[Part, str]]) -> None:
        for part, text in parts:
            self._first_token()
            if part is Part.TEXT:
                self.text_parts.append(text)
                self._out(Delta(id=self._id, text=text))
            else:
                self.reasoning.add(text)
                self._out(Reasoning(id=self._id, text=text))

    def _out(self, event: ChatEvent) -> None:
        if self._stream:
            self._emit(event)
        else:
            self._held.append(event)

    def _first_token(self) -> None:
        if self.first_token_at is None:
            self.first_token_at = time.monotonic()
