"""Shared by front and supervisor: a request-id multiplexed client for a worker or front socket.

Many requests share one Unix connection. Each request carries an integer `id`; one reader task
routes every reply to the inbox registered under that id. When the connection dies, every
waiter is woken with `ConnectionClosed`, so no caller can hang on a dead peer.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncGenerator, Callable
from typing import Any

from protocol.chat import Cancel, ChatRequest, Failure, Finish
from protocol.framing import (
    MAX_FRAME,
    ConnectionClosed,
    FrameDecodeError,
    FramedStream,
    FrameError,
    open_framed,
)
from protocol.inbox import Inbox
from protocol.worker_socket import WorkerReply

log = logging.getLogger(__name__)

_CLOSED = object()  # queued to every waiter when the connection is lost


def _end_of_chat(batch: list[Any]) -> int:
    """Where the chat ends in `batch` (its Finish or Failure, or the lost connection), or -1."""
    for index, event in enumerate(batch):
        if event is _CLOSED or isinstance(event, Finish | Failure):
            return index
    return -1


class MuxClient:
    """Client side of a worker (or front) socket: `call` for one reply, `stream` for a chat."""

    def __init__(self, path: str, *, incoming: Any = WorkerReply, max_frame: int = MAX_FRAME):
        self.path = path
        self._incoming = incoming
        self._max_frame = max_frame
        self._stream: FramedStream[Any, Any] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._waiters: dict[int, Inbox[Any]] = {}
        self._ids = itertools.count(1)
        self._connect_lock = asyncio.Lock()

    @property
    def connected(self) -> bool:
        return self._stream is not None and not self._stream.closed

    @property
    def pending(self) -> int:
        return len(self._waiters)

    def next_id(self) -> int:
        return next(self._ids)

    async def connect(self, timeout: float = 5.0) -> None:
        async with self._connect_lock:
            if self.connected:
                return
            self._stream = await open_framed(
                self.path, self._incoming, timeout=timeout, max_frame=self._max_frame
            )
            self._reader = asyncio.create_task(self._read_loop(self._stream))

    async def close(self) -> None:
        reader, self._reader = self._reader, None
        stream, self._stream = self._stream, None
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        if stream is not None:
            await stream.close()
        self._wake_all()

    async def call(self, make: Callable[[int], Any], timeout: float) -> Any:
        """Send `make(id)` and return its single reply; raises ConnectionClosed / TimeoutError."""
        request_id = self.next_id()
        inbox = self._register(request_id)
        try:
            await self._send(make(request_id))
            async with asyncio.timeout(timeout):
                reply = await inbox.get()
            if reply is _CLOSED:
                raise ConnectionClosed(f"{self.path}: connection lost")
            return reply
        finally:
            self._waiters.pop(request_id, None)

    async def stream(self, request: ChatRequest) -> AsyncGenerator[Any, None]:
        """Send a chat and yield its events until Finish or Failure (see `stream_batches`)."""
        async with contextlib.aclosing(self.stream_batches(request)) as batches:
            async for batch in batches:
                for event in batch:
                    yield event

    async def stream_batches(self, request: ChatRequest) -> AsyncGenerator[list[Any], None]:
        """Send a chat and yield its events a burst at a time, until Finish or Failure.

        Each batch is every event that has arrived when the consumer asks (at least one), so a
        relay pays its per-step costs once per burst of the worker's frames, not per event.
        Leaving the iteration early (client gone, deadline) sends `Cancel` so the worker stops
        the upstream answer instead of generating into the void.
        """
        inbox = self._register(request.id)
        finished = False
        try:
            await self._send(request)
            while True:
                batch = [await inbox.get()]
                if inbox:
                    batch += inbox.take_all()
                end = _end_of_chat(batch)
                if end < 0:
                    yield batch
                    continue
                if batch[end] is _CLOSED:
                    if end:
                        yield batch[:end]
                    raise ConnectionClosed(f"{self.path}: connection lost")
                finished = True
                yield batch[: end + 1]
                return
        finally:
            self._waiters.pop(request.id, None)
            if not finished and self.connected:
                with contextlib.suppress(FrameError, OSError):
                    await self._send(Cancel(id=request.id))

    def _register(self, request_id: int) -> Inbox[Any]:
        inbox: Inbox[Any] = Inbox()
        self._waiters[request_id] = inbox
        return inbox

    async def _send(self, message: Any) -> None:
        if not self.connected:
            await self.connect()
        stream = self._stream
        if stream is None:  # the connection died between connecting and sending
            raise ConnectionClosed(f"{self.path}: connection lost")
        await stream.send(message)

    async def _read_loop(self, stream: FramedStream[Any, Any]) -> None:
        try:
            while True:
                for reply in await stream.recv_batch():
                    if isinstance(reply, FrameDecodeError):
                        log.warning("undecodable frame from %s: %s", self.path, reply)
                        continue
                    inbox = self._waiters.get(reply.id)
                    if inbox is not None:
                        inbox.put(reply)
        except (FrameError, OSError) as exc:
            log.debug("connection to %s ended: %s", self.path, exc)
        finally:
            if self._stream is stream:
                self._stream = None
            await stream.close()
            self._wake_all()

    def _wake_all(self) -> None:
        for inbox in self._waiters.values():
            inbox.put(_CLOSED)
