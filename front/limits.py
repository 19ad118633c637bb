"""Runs in the front: output limits the runtime does not know (stop sequences, max tokens).

Lingma's chat call takes neither, so the front enforces them on the visible text: it cuts at
the first stop sequence (holding back only a tail that could still grow into one) and at an
estimated token budget: the same estimate (protocol/tokens.py) that usage reports, so a reply
cut for `max_tokens` never reports more output tokens than the client allowed.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

from protocol.tokens import TokenCount


class LimitHit(enum.StrEnum):
    STOP_SEQUENCE = "stop_sequence"
    LENGTH = "length"


class OutputLimiter:
    __slots__ = ("_buf", "_emitted", "_max_tokens", "_stops", "hit", "stop_sequence")

    def __init__(self, stop: Sequence[str], max_tokens: int | None) -> None:
        self._stops = [s for s in stop if s]
        self._max_tokens = max_tokens
        self._buf = ""
        self._emitted = TokenCount()
        self.hit: LimitHit | None = None
        self.stop_sequence: str | None = None

    @property
    def active(self) -> bool:
        return bool(self._stops) or self._max_tokens is not None

    def feed(self, text: str) -> str:
        if self.hit is not None:
            return ""
        buf = self._buf + text
        found = self._first_stop(buf)
        if found is not None:
            index, sequence = found
            out, self._buf = buf[:index], ""
            self.hit, self.stop_sequence = LimitHit.STOP_SEQUENCE, sequence
        else:
            hold = self._partial_tail(buf)
            out, self._buf = buf[: len(buf) - hold], buf[len(buf) - hold :]
        return self._budget(out)

    def flush(self) -> str:
        out, self._buf = self._buf, ""
        return self._budget(out) if self.hit is None else ""

    def _budget(self, out: str) -> str:
        if self._max_tokens is not None:
            fitting = self._emitted.fitting_prefix(out, self._max_tokens)
            if fitting < len(out):
                out = out[:fitting]
                self.hit, self.stop_sequence, self._buf = LimitHit.LENGTH, None, ""
        self._emitted.add(out)
        return out

    def _first_stop(self, buf: str) -> tuple[int, str] | None:
        best: tuple[int, str] | None = None
        for sequence in self._stops:
            index = buf.find(sequence)
            if index != -1 and (best is None or index < best[0]):
                best = (index, sequence)
        return best

    def _partial_tail(self, buf: str) -> int:
        """Length of the longest suffix of `buf` that is a proper prefix of a stop sequence."""
        longest = 0
        for sequence in self._stops:
            for size in range(min(len(sequence) - 1, len(buf)), longest, -1):
                if buf.endswith(sequence[:size]):
                    longest = size
                    break
        return longest
