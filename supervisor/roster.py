"""Runs in the supervisor: the roster — which child serves under which key, and which retire.

A child is known by a `ChildKey` (its kind and its name: the account, or `front-<index>`).
At most one handle serves under a key; reload swaps a replacement in with `replace`, removes
an account's worker with `remove`, and the old handle moves to `retiring` while it drains.
Replacements that are still starting are the reloader's (supervisor/reload.py), not here.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.vocabulary import ChildKind
from supervisor.handle import ChildHandle


@dataclass(frozen=True, slots=True)
class ChildKey:
    kind: ChildKind
    name: str  # the account of a worker, `front-<index>` of a front

    @classmethod
    def worker(cls, account: str) -> ChildKey:
        return cls(ChildKind.WORKER, account)

    @classmethod
    def front(cls, index: int) -> ChildKey:
        return cls(ChildKind.FRONT, f"front-{index}")

    def __str__(self) -> str:
        return f"{self.kind.value} {self.name.removeprefix('front-')}"


def key_of(handle: ChildHandle) -> ChildKey:
    return ChildKey(handle.kind, handle.name)


class Roster:
    def __init__(self) -> None:
        self._serving: dict[ChildKey, ChildHandle] = {}  # in the order they were added
        self.retiring: list[ChildHandle] = []  # replaced or removed, draining

    def add(self, handle: ChildHandle) -> None:
        key = key_of(handle)
        if key in self._serving:
            raise KeyError(f"{key} is already on the roster")
        self._serving[key] = handle

    def replace(self, handle: ChildHandle) -> ChildHandle:
        """Serve `handle` under its key instead of the handle that did; returns that one."""
        key = key_of(handle)
        old = self._serving[key]
        self._serving[key] = handle
        return old

    def remove(self, key: ChildKey) -> ChildHandle:
        return self._serving.pop(key)

    def get(self, key: ChildKey) -> ChildHandle | None:
        return self._serving.get(key)

    def serving(self) -> list[ChildHandle]:
        """Fronts first, then workers: the children that route or are routed to."""
        return [*self.fronts(), *self.workers()]

    def workers(self) -> list[ChildHandle]:
        return [h for key, h in self._serving.items() if key.kind is ChildKind.WORKER]

    def fronts(self) -> list[ChildHandle]:
        return [h for key, h in self._serving.items() if key.kind is ChildKind.FRONT]

    def worker(self, account: str) -> ChildHandle | None:
        return self._serving.get(ChildKey.worker(account))
