"""Runs in the supervisor: which row of the host-wide limits table each key name uses.

A name keeps its row while the supervisor runs, also across `keys remove` + `keys add` of the
same name, so its rpm bucket and today's tokens carry on. Rows of removed names are given to
new names only once every fresh row is taken, oldest first, and are zeroed before reuse.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable


class SlotsExhausted(RuntimeError):
    pass


class KeySlots:
    def __init__(self, capacity: int, clear: Callable[[int], None]) -> None:
        self.capacity = capacity
        self._clear = clear
        self._live: dict[str, int] = {}
        self._retired: dict[str, int] = {}  # insertion order = oldest first
        self._next = 0

    def assign(self, names: Iterable[str]) -> dict[str, int]:
        """Slots for exactly `names`; names no longer present are retired."""
        wanted = list(dict.fromkeys(names))
        for name in [n for n in self._live if n not in wanted]:
            self._retired[name] = self._live.pop(name)
        for name in wanted:
            if name in self._live:
                continue
            kept = self._retired.pop(name, None)
            self._live[name] = kept if kept is not None else self._fresh(name)
        return dict(self._live)

    def _fresh(self, name: str) -> int:
        if self._next < self.capacity:
            self._next += 1
            return self._next - 1
        if not self._retired:
            raise SlotsExhausted(f"no limits-table row left for key {name!r} ({self.capacity})")
        oldest = next(iter(self._retired))
        slot = self._retired.pop(oldest)
        self._clear(slot)
        return slot
