"""Shared by front and worker: the per-stream mailbox between a socket's reader and one consumer.

Every open stream has one on each side of a hop (the front's reply router, the worker's push
router), so its size is paid per open stream. `asyncio.Queue` brings a putters deque, a getters
deque and a `join()` event (about 2.5 KiB, four deques) that an unbounded single-consumer
mailbox never uses; this one is a deque and at most one waiting future.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class Inbox(Generic[T]):
    """Unbounded; `put` from any callback, `get` from one task at a time.

    A `get` cancelled while waiting loses nothing: items stay queued until taken.
    """

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: deque[T] = deque()
        self._waiter: asyncio.Future[None] | None = None

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: T) -> None:
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def get_nowait(self) -> T:
        """The oldest item; IndexError when there is none."""
        return self._items.popleft()

    async def get(self) -> T:
        while not self._items:
            if self._waiter is not None:
                raise RuntimeError("Inbox.get: another task is already waiting")
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.popleft()
