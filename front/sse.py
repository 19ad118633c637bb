"""Runs in the front: Server-Sent Events framing and the renderer interface every API implements.

Renderers turn the front's events into ready-to-write bytes. They pre-encode everything that
does not change between chunks (ids, model, envelope) once, so relaying a chunk costs one
msgspec string encode and a bytes concatenation.
"""

from __future__ import annotations

import abc
import asyncio

import msgspec
from aiohttp import web

from front.errors import ApiError
from front.pipeline import FrontEvent, Outcome
from protocol.chat import Delta, Reasoning, ToolCall

json_encode = msgspec.json.Encoder().encode

STREAM_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache, no-transform",
    "X-Accel-Buffering": "no",
}
DONE = b"data: [DONE]\n\n"


def data_line(payload: object) -> bytes:
    return b"data: " + json_encode(payload) + b"\n\n"


def named_event(name: str, payload: object) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + json_encode(payload) + b"\n\n"


def open_object(payload: dict[str, object]) -> bytes:
    """`payload` encoded without its closing brace, so per-chunk fields can be appended."""
    return json_encode(payload)[:-1]


class StreamRenderer(abc.ABC):
    """One response stream in one API's format; every method returns bytes to write."""

    @abc.abstractmethod
    def open(self) -> bytes: ...

    @abc.abstractmethod
    def text(self, text: str) -> bytes: ...

    @abc.abstractmethod
    def reasoning(self, text: str) -> bytes: ...

    @abc.abstractmethod
    def tool_call(self, call: ToolCall) -> bytes: ...

    @abc.abstractmethod
    def close(self, outcome: Outcome) -> bytes: ...

    @abc.abstractmethod
    def error(self, err: ApiError) -> bytes: ...

    def event(self, event: FrontEvent) -> bytes:
        if type(event) is Delta:
            return self.text(event.text)
        if type(event) is Reasoning:
            return self.reasoning(event.text)
        assert isinstance(event, ToolCall)
        return self.tool_call(event)


async def open_stream(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(status=200, headers=STREAM_HEADERS)
    await response.prepare(request)
    return response


class CoalescingWriter:
    """Writes a stream's chunks with as few socket writes as possible.

    The relaying task appends chunks without waiting; a writer task sends everything that
    piled up since its last write in one `write`. When a worker's events arrive in a burst the
    burst costs one syscall; a lone event is written one loop iteration later. Above
    `high_water` pending bytes the relaying task waits, so a slow client cannot grow memory.
    The two sides wake each other with a bare future made only while one waits (an
    `asyncio.Event` is about 1 KiB, and this object lives as long as its stream).
    """

    def __init__(self, response: web.StreamResponse, high_water: int = 1 << 20) -> None:
        self._response = response
        self._high_water = high_water
        self._parts: list[bytes] = []
        self._size = 0
        self._closing = False
        self._wake: asyncio.Future[None] | None = None  # the writer task waits for parts
        self._room: asyncio.Future[None] | None = None  # the relaying task waits for room
        self._task = asyncio.create_task(self._run())

    async def write(self, chunk: bytes) -> None:
        if self._task.done():
            self._task.result()  # re-raise the writer's failure (client gone)
            raise ConnectionResetError("stream writer stopped")
        self._parts.append(chunk)
        self._size += len(chunk)
        _wake_up(self._wake)
        if self._size > self._high_water:
            # The writer task sets it when it takes the parts, or when it stops.
            self._room = asyncio.get_running_loop().create_future()
            try:
                await self._room
            finally:
                self._room = None

    async def close(self) -> None:
        """Flush what is pending and stop the writer task."""
        self._closing = True
        _wake_up(self._wake)
        await self._task

    def abort(self) -> None:
        if not self._task.done():
            self._task.cancel()
        elif not self._task.cancelled():
            self._task.exception()  # retrieved: a client that left is not an error to report

    async def _run(self) -> None:
        try:
            while True:
                if not self._parts:
                    if self._closing:
                        return
                    self._wake = asyncio.get_running_loop().create_future()
                    try:
                        await self._wake
                    finally:
                        self._wake = None
                    continue
                data = b"".join(self._parts)
                self._parts.clear()
                self._size = 0
                _wake_up(self._room)
                await self._response.write(data)
        finally:
            _wake_up(self._room)  # never leave the relaying task waiting for room


def _wake_up(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)
