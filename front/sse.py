"""Runs in the front: Server-Sent Events framing and the renderer interface every API implements.

Renderers turn the front's events into ready-to-write bytes. They pre-encode everything that
does not change between chunks (ids, model, envelope) once, so relaying a chunk costs one
msgspec string encode and a bytes concatenation.
"""

from __future__ import annotations

import abc

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
    """One response stream in one API's format; every method returns bytes to write.

    One renderer lives as long as its stream: subclasses declare `__slots__` (no __dict__).
    """

    __slots__ = ()

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
