"""Runs in the worker: one front/supervisor connection on the worker's Unix socket.

Requests are multiplexed by `id`: chats and slow queries run as tasks and answer whenever they
are done, Ping is answered inline so liveness never waits behind work, Cancel stops the chat of
that id on this connection. A frame that does not decode gets `Failure(id=0, BAD_FRAME)` and the
connection keeps serving; an oversized frame gets the same reply and then the connection closes
(the stream cannot be resynchronised). When the peer goes away its chats are cancelled, which
stops their upstream answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from protocol.chat import Cancel, ChatEvent, ChatRequest, Failure
from protocol.child_socket import Ping, Pong
from protocol.framing import (
    ConnectionClosed,
    FrameDecodeError,
    FramedStream,
    FrameError,
    FrameTooLarge,
)
from protocol.vocabulary import ErrorCode
from protocol.worker_socket import WorkerReply, WorkerRequest

log = logging.getLogger(__name__)


class RequestHandler(Protocol):
    def pong(self, request: Ping) -> Pong: ...

    def start_chat(
        self, request: ChatRequest, emit: Callable[[ChatEvent], None]
    ) -> asyncio.Task[None] | None: ...

    def answer(self, request: Any) -> Awaitable[WorkerReply]: ...


class IpcConnection:
    def __init__(
        self, handler: RequestHandler, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.handler = handler
        self.stream: FramedStream[Any, WorkerReply] = FramedStream(reader, writer, WorkerRequest)
        self.chats: dict[int, asyncio.Task[None]] = {}
        self._queries: set[asyncio.Task[None]] = set()

    async def serve(self) -> None:
        try:
            while True:
                try:
                    requests = await self.stream.recv_batch()
                except FrameTooLarge as exc:
                    self.send(Failure(id=0, code=ErrorCode.BAD_FRAME, message=str(exc)))
                    with contextlib.suppress(FrameError, OSError):
                        await self.stream.drain()
                    break
                for request in requests:
                    if isinstance(request, FrameDecodeError):
                        self.send(Failure(id=0, code=ErrorCode.BAD_FRAME, message=str(request)))
                    else:
                        self.dispatch(request)
        except (ConnectionClosed, OSError):
            pass
        finally:
            for task in [*self.chats.values(), *self._queries]:
                task.cancel()
            await self.stream.close()

    def send(self, message: WorkerReply) -> None:
        """Queue one reply; a peer that went away just loses it."""
        try:  # noqa: SIM105 - not contextlib.suppress: this runs once per streamed chunk
            self.stream.send_nowait(message)
        except (FrameError, OSError):
            pass

    def dispatch(self, request: Any) -> None:
        match request:
            case Ping():
                self.send(self.handler.pong(request))
            case Cancel(id=chat_id):
                task = self.chats.get(chat_id)
                if task is not None:
                    task.cancel()
            case ChatRequest(id=chat_id):
                if chat_id in self.chats:
                    self.send(
                        Failure(
                            id=chat_id,
                            code=ErrorCode.BAD_REQUEST,
                            message=f"request id {chat_id} is already running",
                        )
                    )
                    return
                task = self.handler.start_chat(request, self.send)
                if task is not None:
                    self.chats[chat_id] = task
                    task.add_done_callback(functools.partial(self._chat_done, chat_id))
            case _:
                query = asyncio.create_task(self._answer(request))
                self._queries.add(query)
                query.add_done_callback(self._queries.discard)

    def _chat_done(self, chat_id: int, _task: asyncio.Task[None]) -> None:
        self.chats.pop(chat_id, None)

    async def _answer(self, request: Any) -> None:
        try:
            reply = await self.handler.answer(request)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("request %s failed", type(request).__name__)
            reply = Failure(id=request.id, code=ErrorCode.INTERNAL, message="internal error")
        self.send(reply)
