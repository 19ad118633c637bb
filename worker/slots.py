"""Runs in the worker: the per-account concurrency limit with a bounded wait."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class Overloaded(Exception):
    def __init__(self, limit: int, waited_s: float) -> None:
        super().__init__(f"all {limit} upstream slots stayed busy for {waited_s:.0f}s")
        self.retry_after = 1.0


class UpstreamSlots:
    """At most `limit` chats upstream at once; the rest wait up to `queue_timeout_s`."""

    def __init__(self, limit: int, queue_timeout_s: float) -> None:
        self.limit = max(1, limit)
        self.queue_timeout_s = queue_timeout_s
        self.in_flight = 0
        self.queued = 0
        self._slots = asyncio.Semaphore(self.limit)

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        self.queued += 1
        try:
            async with asyncio.timeout(self.queue_timeout_s):
                await self._slots.acquire()
        except TimeoutError:
            raise Overloaded(self.limit, self.queue_timeout_s) from None
        finally:
            self.queued -= 1
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1
            self._slots.release()
