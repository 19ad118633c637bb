"""Runs in the front: global admission control (max in flight + a bounded, timed FIFO queue).

A request either gets a slot at once, waits in FIFO order for at most `queue_timeout_s`
(and never past its own deadline), or is rejected, so overload shows up as a fast 429 with
Retry-After instead of unbounded latency. Slots are handed over directly from a releasing
request to the oldest waiter, so a burst cannot starve an early waiter.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
from collections.abc import AsyncIterator


class Rejection(enum.StrEnum):
    QUEUE_FULL = "queue_full"
    QUEUE_TIMEOUT = "queue_timeout"
    CLOSED = "closed"


class AdmissionRejected(Exception):
    def __init__(self, reason: Rejection, retry_after: float) -> None:
        super().__init__(f"admission rejected: {reason}")
        self.reason = reason
        self.retry_after = retry_after


class Admission:
    def __init__(
        self, max_in_flight: int, queue_timeout_s: float, max_queue: int | None = None
    ) -> None:
        self.max_in_flight = max(1, max_in_flight)
        self.queue_timeout_s = queue_timeout_s
        self.max_queue = max_queue if max_queue is not None else 4 * self.max_in_flight
        self.in_flight = 0
        self.closed = False
        self.rejected_total = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def queued(self) -> int:
        return len(self._waiters)

    def close(self) -> None:
        """Drain: refuse every new request; requests already waiting are refused too."""
        self.closed = True
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(AdmissionRejected(Rejection.CLOSED, 5.0))

    async def acquire(self, max_wait: float | None = None) -> None:
        if self.closed:
            raise self._reject(Rejection.CLOSED)
        if self.in_flight < self.max_in_flight and not self._waiters:
            self.in_flight += 1
            self._idle.clear()
            return
        if len(self._waiters) >= self.max_queue:
            raise self._reject(Rejection.QUEUE_FULL)
        wait = self.queue_timeout_s if max_wait is None else min(self.queue_timeout_s, max_wait)
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(max(0.0, wait)):
                await waiter
        except TimeoutError:
            if self._got_slot(waiter):
                return  # handed a slot just as the timer fired: keep it
            raise self._reject(Rejection.QUEUE_TIMEOUT) from None
        except asyncio.CancelledError:
            if self._got_slot(waiter):
                self.release()
            raise

    def _got_slot(self, waiter: asyncio.Future[None]) -> bool:
        with contextlib.suppress(ValueError):
            self._waiters.remove(waiter)
        return waiter.done() and not waiter.cancelled() and waiter.exception() is None

    def release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes straight to the oldest waiter
                return
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()

    async def wait_idle(self) -> None:
        """Return once nothing is in flight or queued (drain waits on this)."""
        await self._idle.wait()

    @contextlib.asynccontextmanager
    async def slot(self, max_wait: float | None = None) -> AsyncIterator[None]:
        await self.acquire(max_wait)
        try:
            yield
        finally:
            self.release()

    def _reject(self, reason: Rejection) -> AdmissionRejected:
        self.rejected_total += 1
        retry_after = 5.0 if reason is Rejection.CLOSED else 1.0
        return AdmissionRejected(reason, retry_after)
