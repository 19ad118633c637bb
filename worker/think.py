"""Runs in the worker: splitting the runtime's inline markup out of a streamed answer.

Some runtimes put the model's reasoning inside the answer text between
`\\n````think::<millis>\\n` and `\\n````\\n` (lingma-protocol.md §5.3); that becomes reasoning.
In agent mode the legacy flow also announces the runtime's own IDE tools with a card,
```` ```toolCall::<name>::<id>::<STATUS>\\n``` ```` (§9.1): plugin UI, not model text, and
the gateway runs no IDE tools, so cards are dropped. Deltas split these markers at arbitrary
points, so the splitter holds back any tail that could still become a marker.
"""

from __future__ import annotations

import enum

OPEN = "````think::"
CLOSE = "\n````\n"
CARD_OPEN = "```toolCall::"
CARD_CLOSE = "\n```"


class Part(enum.StrEnum):
    TEXT = "text"
    REASONING = "reasoning"


class _Where(enum.Enum):
    OUTSIDE = 1
    HEADER = 2  # inside the `think::<millis>` info string
    INSIDE = 3
    CARD = 4  # inside a tool card, up to its closing fence


def _held_tail(buffer: str, *tokens: str) -> int:
    """Length of the longest tail of `buffer` that is a proper prefix of one of `tokens`.

    Runs once per streamed delta, so it only looks at positions where a token could start
    (its first character within the last len(token) - 1 characters): usually none.
    """
    best = 0
    for token in tokens:
        position = buffer.find(token[0], max(0, len(buffer) - len(token) + 1))
        while position >= 0 and len(buffer) - position > best:
            if token.startswith(buffer[position:]):
                best = len(buffer) - position
                break
            position = buffer.find(token[0], position + 1)
    return best


class ThinkSplitter:
    __slots__ = ("_buffer", "_card_newline", "_where")  # one per open chat

    def __init__(self) -> None:
        self._buffer = ""
        self._where = _Where.OUTSIDE
        self._card_newline = False  # the newline that ends a card's closing fence is the card's

    def feed(self, text: str) -> list[tuple[Part, str]]:
        # The common delta: no backtick (every marker starts with one) and no trailing newline
        # (a think fence takes the newline before it), so nothing needs holding back.
        if "`" not in text and text[-1:] != "\n" and not self._buffer and self._plain():
            return [(Part.TEXT, text)] if text else []
        self._buffer += text
        out: list[tuple[Part, str]] = []
        while self._buffer:
            if not self._step(out):
                break
        return [(part, chunk) for part, chunk in out if chunk]

    def _plain(self) -> bool:
        return self._where is _Where.OUTSIDE and not self._card_newline

    def flush(self) -> list[tuple[Part, str]]:
        rest, self._buffer = self._buffer, ""
        if self._where is _Where.OUTSIDE:
            return [(Part.TEXT, rest)] if rest else []
        if self._where is _Where.INSIDE:
            rest = rest.removesuffix("\n````")
            return [(Part.REASONING, rest)] if rest else []
        return []  # an unfinished think header or tool card carries no text

    def _step(self, out: list[tuple[Part, str]]) -> bool:
        """Consume what can be decided now; False when the rest must wait for more text."""
        if self._where is _Where.OUTSIDE:
            return self._outside(out)
        if self._where is _Where.CARD:
            return self._card()
        buffer = self._buffer
        if self._where is _Where.HEADER:
            end = buffer.find("\n")
            if end < 0:
                return False
            self._buffer = buffer[end + 1 :]
            self._where = _Where.INSIDE
            return True
        end = buffer.find(CLOSE)
        if end >= 0:
            out.append((Part.REASONING, buffer[:end]))
            self._buffer = buffer[end + len(CLOSE) :]
            self._where = _Where.OUTSIDE
            return True
        keep = _held_tail(buffer, CLOSE)
        out.append((Part.REASONING, buffer[: len(buffer) - keep]))
        self._buffer = buffer[len(buffer) - keep :]
        return False

    def _outside(self, out: list[tuple[Part, str]]) -> bool:
        buffer = self._buffer
        if self._card_newline:
            self._card_newline = False
            buffer = self._buffer = buffer.removeprefix("\n")
        think, card = buffer.find(OPEN), buffer.find(CARD_OPEN)
        if card >= 0 and (think < 0 or card < think):
            out.append((Part.TEXT, buffer[:card]))
            self._buffer = buffer[card + len(CARD_OPEN) :]
            self._where = _Where.CARD
            return True
        if think >= 0:
            out.append((Part.TEXT, buffer[:think].removesuffix("\n")))
            self._buffer = buffer[think + len(OPEN) :]
            self._where = _Where.HEADER
            return True
        keep = _held_tail(buffer, "\n" + OPEN, OPEN, CARD_OPEN)
        out.append((Part.TEXT, buffer[: len(buffer) - keep]))
        self._buffer = buffer[len(buffer) - keep :]
        return False

    def _card(self) -> bool:
        buffer = self._buffer
        end = buffer.find(CARD_CLOSE)
        if end < 0:
            keep = _held_tail(buffer, CARD_CLOSE)  # the card's own text is dropped
            self._buffer = buffer[len(buffer) - keep :]
            return False
        self._buffer = buffer[end + len(CARD_CLOSE) :]
        self._where = _Where.OUTSIDE
        self._card_newline = True
        return True
