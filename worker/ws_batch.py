"""Runs in the worker: frames written to a runtime WebSocket in one loop turn go in one write.

aiohttp writes each WebSocket frame to the socket at once, so every RPC, every push ack and
every session deletion costs a `write` that wakes the runtime. A burst (the acks for a batch of
pushes read together, the calls of many chats started in one turn) then costs one syscall and
one wake-up per frame: on a small VM the biggest share of the worker's CPU. `batch_writes`
puts `BatchedTransport` between aiohttp's frame writer and the socket: frames stay exactly the
frames aiohttp builds, one LSP message each (lingma-protocol.md §3.5), and are handed to the
socket together at the end of the loop turn. TCP carries bytes, so the runtime cannot tell.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp


class BatchedTransport:
    """Stands in for a transport inside aiohttp's frame writer; the rest goes to the real one."""

    __slots__ = ("_loop", "_parts", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._parts: list[bytes | bytearray] = []

    def write(self, data: bytes | bytearray) -> None:
        if not self._parts:
            self._loop.call_soon(self.flush)
        self._parts.append(data)

    def flush(self) -> None:
        """Hand every frame written since the last flush to the socket in one write."""
        parts, self._parts = self._parts, []
        if not parts or self._transport.is_closing():
            return  # closing: aiohttp refuses new frames itself, queued ones had no reader left
        self._transport.write(parts[0] if len(parts) == 1 else b"".join(parts))

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def batch_writes(ws: aiohttp.ClientWebSocketResponse[Any]) -> bool:
    """Batch `ws`'s frame writes; False (and writes unbatched) where aiohttp's writer differs."""
    writer = getattr(ws, "_writer", None)
    transport = getattr(writer, "transport", None)
    if transport is None or isinstance(transport, BatchedTransport):
        return False
    writer.transport = BatchedTransport(transport, asyncio.get_running_loop())  # type: ignore[union-attr]
    return True
