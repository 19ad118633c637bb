"""Shared by front and worker: the per-stream mailbox between a socket's reader and one consumer.

Every open stream has one on each side of a hop (the front's reply router, the worker's push
router), so its size is paid per open stream. `asyncio.Queue` brings a putters deque, a getters
deque and a `join()` event (about 2.5 KiB, four deques) that an unbounded single-consumer
mailbox never uses; this one is a list read from a moving head (an empty deque alone is 760
bytes, an empty list 56) and at most one waiting future.
"""

from __future__ import annotations

import asyncio
from typing import Any, Generic, TypeVar, cast

T = TypeVar("T")
COMPACT_AFTER = 1024  # taken slots tolerated at the head before the list is compacted


class Inbox(Generic[T]):
    """Unbounded; `put` from any callback, `get` from one task at a time.

    A `get` cancelled while waiting loses nothing: items stay queued until taken.
    """

    __slots__ = ("_head", "_items", "_waiter")

    def __init__(self) -> None:
        self._items: list[Any] = []  # T, or None where an item was already taken
        self._head = 0  # index of the oldest item not taken yet
        self._waiter: asyncio.Future[None] | None = None

    def __len__(self) -> int:
        return len(self._items) - self._head

    def put(self, item: T) -> None:
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def get_nowait(self) -> T:
        """The oldest item; IndexError when there is none."""
        items, head = self._items, self._head
        if head >= len(items):
            raise IndexError("the inbox is empty")
        item = items[head]
        if head + 1 == len(items):  # drained: start over at the front of the list
            items.clear()
            self._head = 0
        elif head >= COMPACT_AFTER and head * 2 >= len(items):
            # A consumer that never quite catches up: drop the taken slots now and then.
            del items[: head + 1]
            self._head = 0
        else:
            items[head] = None  # taken: do not keep it alive until the list drains
            self._head = head + 1
        return cast(T, item)

    def take_all(self) -> list[T]:
        """Every queued item, oldest first: a consumer that handles a burst at once."""
        items, head = self._items, self._head
        self._items, self._head = [], 0
        return cast(list[T], items[head:] if head else items)

    async def get(self) -> T:
        while not len(self):
            if self._waiter is not None:
                raise RuntimeError("Inbox.get: another task is already waiting")
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self.get_nowait()
