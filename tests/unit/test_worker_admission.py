"""The per-account concurrency limit: slots, the bounded queue, counters."""

from __future__ import annotations

import asyncio

import pytest

from worker.slots import Overloaded, UpstreamSlots

pytestmark = pytest.mark.unit


async def test_a_full_worker_queues_then_overloads_and_frees_slots() -> None:
    admission = UpstreamSlots(limit=1, queue_timeout_s=0.0)
    async with admission.slot():
        assert (admission.in_flight, admission.queued) == (1, 0)
        with pytest.raises(Overloaded) as info:
            async with admission.slot():
                pass
        assert info.value.retry_after > 0 and admission.queued == 0
    assert admission.in_flight == 0
    async with admission.slot():  # the slot came back
        assert admission.in_flight == 1


async def test_waiters_get_the_slot_in_turn() -> None:
    admission = UpstreamSlots(limit=1, queue_timeout_s=5.0)
    order: list[str] = []
    gate = asyncio.Event()

    async def hold(name: str) -> None:
        async with admission.slot():
            order.append(name)
            await gate.wait()

    first = asyncio.create_task(hold("first"))
    second = asyncio.create_task(hold("second"))
    for _ in range(100):  # a few loop turns let both tasks reach the semaphore
        if admission.queued == 1:
            break
        await asyncio.sleep(0)
    assert admission.queued == 1 and order == ["first"]
    gate.set()
    await asyncio.gather(first, second)
    assert order == ["first", "second"] and admission.in_flight == 0
