"""Unit: the per-stream Inbox (order, waking its one consumer, cancellation keeps items)."""

from __future__ import annotations

import asyncio

import pytest

from protocol.inbox import Inbox

pytestmark = pytest.mark.unit


async def loop_turn() -> None:
    """Let every task that is ready run once (so a consumer reaches its wait)."""
    turn = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_soon(turn.set_result, None)
    await turn


async def test_items_come_out_in_order_and_wake_a_waiting_consumer() -> None:
    inbox: Inbox[int] = Inbox()
    waiting = asyncio.ensure_future(inbox.get())
    await loop_turn()
    assert not waiting.done()
    inbox.put(1)
    inbox.put(2)
    assert await waiting == 1
    assert len(inbox) == 1 and inbox.get_nowait() == 2
    with pytest.raises(IndexError):
        inbox.get_nowait()


async def test_a_cancelled_get_loses_nothing() -> None:
    inbox: Inbox[str] = Inbox()
    waiting = asyncio.ensure_future(inbox.get())
    await loop_turn()
    waiting.cancel()
    inbox.put("kept")  # put after the cancel was requested, before it was delivered
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert await inbox.get() == "kept"


async def test_a_second_concurrent_consumer_is_a_bug() -> None:
    inbox: Inbox[int] = Inbox()
    first = asyncio.ensure_future(inbox.get())
    await loop_turn()
    with pytest.raises(RuntimeError, match="already waiting"):
        await inbox.get()
    inbox.put(7)
    assert await first == 7


def test_a_consumer_that_never_catches_up_keeps_the_list_bounded() -> None:
    inbox: Inbox[int] = Inbox()
    inbox.put(0)
    for n in range(1, 10_000):
        inbox.put(n)
        assert inbox.get_nowait() == n - 1  # always one item behind
        assert len(inbox) == 1
    assert len(inbox._items) <= 2 * 1024 + 2  # taken slots are dropped now and then
    assert inbox.get_nowait() == 9_999 and len(inbox) == 0
