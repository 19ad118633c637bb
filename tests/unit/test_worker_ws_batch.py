"""Frames aiohttp writes in one loop turn reach the runtime's socket in one write, in order."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from worker.ws_batch import BatchedTransport, batch_writes

pytestmark = pytest.mark.unit


class FakeTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return 7


async def next_turn() -> None:
    await asyncio.sleep(0)


async def test_one_turn_of_frames_is_one_write_in_order() -> None:
    real = FakeTransport()
    batched = BatchedTransport(cast(Any, real), asyncio.get_running_loop())
    batched.write(b"first")
    batched.write(bytearray(b"-second"))
    batched.write(b"-third")
    assert real.writes == []
    await next_turn()
    assert real.writes == [b"first-second-third"]
    batched.write(b"later")
    await next_turn()
    assert real.writes == [b"first-second-third", b"later"]


async def test_everything_else_is_the_real_transport() -> None:
    real = FakeTransport()
    batched = BatchedTransport(cast(Any, real), asyncio.get_running_loop())
    assert batched.get_write_buffer_size() == 7
    real.closing = True
    assert batched.is_closing()
    batched.write(b"too late")
    await next_turn()
    assert real.writes == []


async def test_a_websocket_is_batched_once_and_an_unknown_one_not_at_all() -> None:
    class Writer:
        def __init__(self) -> None:
            self.transport: Any = FakeTransport()

    class Socket:
        def __init__(self) -> None:
            self._writer = Writer()

    socket = Socket()
    assert batch_writes(cast(Any, socket))
    assert isinstance(socket._writer.transport, BatchedTransport)
    assert not batch_writes(cast(Any, socket))
    assert not batch_writes(cast(Any, object()))
