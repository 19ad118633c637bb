"""Admission control: immediate slots, FIFO hand-over, bounded queue, drain refusal."""

from __future__ import annotations

import asyncio

import pytest

from front.admission import Admission, AdmissionRejected, Rejection

pytestmark = pytest.mark.unit


async def test_slots_up_to_the_limit_then_queue_full() -> None:
    admission = Admission(2, queue_timeout_s=5.0, max_queue=0)
    await admission.acquire()
    await admission.acquire()
    with pytest.raises(AdmissionRejected) as info:
        await admission.acquire()
    assert info.value.reason is Rejection.QUEUE_FULL
    assert admission.rejected_total == 1


async def test_zero_wait_is_an_immediate_timeout() -> None:
    admission = Admission(1, queue_timeout_s=5.0)
    await admission.acquire()
    with pytest.raises(AdmissionRejected) as info:
        await admission.acquire(max_wait=0.0)
    assert info.value.reason is Rejection.QUEUE_TIMEOUT
    assert info.value.retry_after >= 1
    assert admission.queued == 0


async def test_release_hands_the_slot_to_the_oldest_waiter() -> None:
    admission = Admission(1, queue_timeout_s=5.0)
    await admission.acquire()
    order: list[str] = []

    async def wait(name: str) -> None:
        await admission.acquire()
        order.append(name)

    first = asyncio.create_task(wait("first"))
    await asyncio.sleep(0)
    second = asyncio.create_task(wait("second"))
    await asyncio.sleep(0)
    assert admission.queued == 2
    admission.release()
    await first
    assert order == ["first"] and admission.in_flight == 1
    admission.release()
    await second
    assert order == ["first", "second"]
    admission.release()
    assert admission.in_flight == 0


async def test_cancelled_waiter_gives_back_a_handed_slot() -> None:
    admission = Admission(1, queue_timeout_s=5.0)
    await admission.acquire()
    waiter = asyncio.create_task(admission.acquire())
    await asyncio.sleep(0)
    admission.release()  # slot handed to the waiter...
    waiter.cancel()  # ...which is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert admission.in_flight == 0


async def test_close_refuses_new_and_waiting_requests() -> None:
    admission = Admission(1, queue_timeout_s=5.0)
    await admission.acquire()
    waiter = asyncio.create_task(admission.acquire())
    await asyncio.sleep(0)
    admission.close()
    with pytest.raises(AdmissionRejected):
        await waiter
    with pytest.raises(AdmissionRejected) as info:
        await admission.acquire()
    assert info.value.reason is Rejection.CLOSED


async def test_wait_idle_returns_when_the_last_slot_is_released() -> None:
    admission = Admission(2, queue_timeout_s=5.0)
    async with admission.slot():
        idle = asyncio.create_task(admission.wait_idle())
        await asyncio.sleep(0)
        assert not idle.done()
    await idle
