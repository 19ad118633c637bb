"""Runs in the emulator: one client connection — JSON-RPC 2.0 dispatch, pushes and their acks.

Transport-neutral: the WebSocket endpoint and the Unix socket both feed bytes in and give a
`sink` for framed text out. Outgoing messages go through an outbox drained by one sender task,
which keeps their order and lets a knob coalesce or split frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import msgspec

from emulator.rpc_framing import FrameDecoder, frame
from emulator.settings import FrameMode, Knobs, UnframedPolicy

log = logging.getLogger("lingma-emulator.rpc")

METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
PARSE_ERROR = -32700

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode
_connection_ids = itertools.count(1)


class MethodError(Exception):
    """Raised by a method handler: becomes a JSON-RPC error response."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class MethodNotFound(MethodError):
    def __init__(self, method: str) -> None:
        super().__init__(METHOD_NOT_FOUND, f"method not found: {method}")


class _NoReply:
    """A handler's result meaning: this request is never answered (knobs for silent methods)."""


NO_REPLY = _NoReply()


Sink = Callable[[str], Awaitable[None]]
Closer = Callable[[], Awaitable[None]]
RequestHandler = Callable[["ClientConnection", str, Any], Awaitable[Any]]


class Outbox:
    """Queue of framed messages and the one task that writes them, in order."""

    def __init__(self, sink: Sink, mode: FrameMode) -> None:
        self._sink = sink
        self._mode = mode
        self._pending: list[str] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._stopped = False

    def put(self, framed: str) -> None:
        if self._stopped:
            return
        self._pending.append(framed)
        self._idle.clear()
        self._wake.set()

    async def drained(self) -> None:
        await self._idle.wait()

    async def run(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._pending:
                    batch, self._pending = self._pending, []
                    await self._write(batch)
                self._idle.set()
        except ConnectionError:
            log.info("EMULATOR outbox: peer went away; %d messages dropped", len(self._pending))
        finally:
            self._stopped = True
            self._pending.clear()
            self._idle.set()

    async def _write(self, batch: list[str]) -> None:
        if self._mode is FrameMode.COALESCE:
            await self._sink("".join(batch))
            return
        for framed in batch:
            if self._mode is FrameMode.SPLIT and len(framed) > 1:
                middle = len(framed) // 2
                await self._sink(framed[:middle])
                await self._sink(framed[middle:])
            else:
                await self._sink(framed)


class ClientConnection:
    """Per-connection state: decoder, outbox, push ids awaiting acks, and its turn tasks."""

    def __init__(self, *, sink: Sink, closer: Closer, handler: RequestHandler, knobs: Knobs):
        self.id = next(_connection_ids)
        self.knobs = knobs
        self._closer = closer
        self._handler = handler
        self._decoder = FrameDecoder()
        self._outbox = Outbox(sink, knobs.frame_mode)
        self._push_ids = itertools.count(1)
        self._unacked: dict[int, asyncio.Future[None]] = {}
        self._replies: dict[int, asyncio.Future[dict[str, Any]]] = {}  # see `request`
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sender: asyncio.Task[None] | None = None
        self.closed = False

    def start(self) -> None:
        self._sender = asyncio.get_running_loop().create_task(self._outbox.run())
        if self.knobs.extension_register:
            register = {"extensions": [], "emulator": True}
            self.spawn(self.push("extension/register", register, always_request=True))

    # -- incoming -------------------------------------------------------------------------

    async def feed(self, data: bytes) -> bool:
        """Handle everything complete in `data`; False means: close this connection."""
        decoded = self._decoder.feed(data)
        if decoded.rejected:
            log.warning("EMULATOR conn %d: Unknown message header (unframed input)", self.id)
            if self.knobs.unframed is UnframedPolicy.CLOSE:
                return False
        for body in decoded.bodies:
            await self._handle(body)
        return not self.closed

    async def _handle(self, body: bytes) -> None:
        try:
            message = _decode(body)
        except msgspec.DecodeError as exc:
            self._send({"jsonrpc": "2.0", "result": None, "error": _err(PARSE_ERROR, str(exc))})
            return
        if not isinstance(message, dict):
            log.warning("EMULATOR conn %d: ignoring a non-object message", self.id)
            return
        method = message.get("method")
        if isinstance(method, str):
            await self._handle_call(method, message)
        elif "id" in message:
            self._take_reply(message)

    async def _handle_call(self, method: str, message: dict[str, Any]) -> None:
        params = message.get("params")
        if "id" not in message:
            await self._handle_notification(method, params)
            return
        request_id = message["id"]
        try:
            result = await self._handler(self, method, params)
        except MethodError as exc:
            self.send_error(request_id, exc.code, exc.message)
        except Exception:
            log.exception("EMULATOR conn %d: handler for %s failed", self.id, method)
            self.send_error(request_id, INTERNAL_ERROR, f"internal error in {method}")
        else:
            if result is not NO_REPLY:
                self._send({"jsonrpc": "2.0", "result": result, "id": request_id})

    async def _handle_notification(self, method: str, params: Any) -> None:
        """Notifications never get a reply; unknown ones are only logged, as the runtime does."""
        try:
            await self._handler(self, method, params)
        except MethodNotFound:
            log.info("EMULATOR conn %d: unknown method: %s", self.id, method)
        except MethodError as exc:
            log.info("EMULATOR conn %d: notification %s rejected: %s", self.id, method, exc)
        except Exception:
            log.exception("EMULATOR conn %d: notification %s failed", self.id, method)

    def _take_reply(self, message: dict[str, Any]) -> None:
        """A reply to one of our pushes: an ack, or the answer a `request` waits for."""
        push_id = message["id"]
        if not isinstance(push_id, int):
            return
        ack = self._unacked.pop(push_id, None)
        if ack is not None and not ack.done():
            ack.set_result(None)
        reply = self._replies.pop(push_id, None)
        if reply is not None and not reply.done():
            reply.set_result(message)

    # -- outgoing -------------------------------------------------------------------------

    def _send(self, message: dict[str, Any]) -> None:
        if not self.closed:
            self._outbox.put(frame(_encode(message)))

    def send_raw(self, text: str) -> None:
        """Exactly `text` as one frame, unframed or malformed (the `garbage` fault)."""
        if not self.closed:
            self._outbox.put(text)

    def send_error(self, request_id: Any, code: int, message: str) -> None:
        self._send(
            {"jsonrpc": "2.0", "result": None, "error": _err(code, message), "id": request_id}
        )

    def notify(self, method: str, params: Any) -> None:
        self._send({"jsonrpc": "2.0", "method": method, "params": params})

    async def push(
        self,
        method: str,
        params: Any,
        *,
        always_request: bool = False,
        track_ack: bool = False,
    ) -> asyncio.Future[None] | None:
        """A server→client push: a request with an id from our counter (knob: notification).

        With the strict-ack knob the stream stalls here until the client acknowledges it. With
        `track_ack` the returned future completes when the client acks this push (None when the
        push went out as a notification, which cannot be acked).
        """
        if self.closed:
            return None
        if self.knobs.push_as_notification and not always_request:
            self.notify(method, params)
            return None
        push_id = next(self._push_ids)
        waiter: asyncio.Future[None] | None = None
        if self.knobs.strict_ack or track_ack:
            waiter = asyncio.get_running_loop().create_future()
            self._unacked[push_id] = waiter
            # An ack that never comes must not pin the entry for the connection's lifetime.
            waiter.add_done_callback(lambda _done: self._unacked.pop(push_id, None))
        self._send({"jsonrpc": "2.0", "method": method, "params": params, "id": push_id})
        if waiter is not None and self.knobs.strict_ack:
            await waiter
        return waiter

    def request(self, method: str, params: Any) -> asyncio.Future[dict[str, Any]] | None:
        """A server→client request whose answer matters (tool/invoke): always with an id.

        The future completes with the client's whole reply message (`result` and/or `error`);
        None when the connection is already closed. Cancel it to stop waiting.
        """
        if self.closed:
            return None
        push_id = next(self._push_ids)
        reply: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._replies[push_id] = reply
        reply.add_done_callback(lambda _done: self._replies.pop(push_id, None))
        self._send({"jsonrpc": "2.0", "method": method, "params": params, "id": push_id})
        return reply

    def push_copy(self, method: str, params: Any) -> None:
        """A push this connection only overhears (broadcast knob): same shape, never awaited."""
        if self.closed:
            return
        if self.knobs.push_as_notification:
            self.notify(method, params)
            return
        self._send(
            {"jsonrpc": "2.0", "method": method, "params": params, "id": next(self._push_ids)}
        )

    # -- lifetime -------------------------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run a background job owned by this connection (cancelled when it closes)."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def drain(self) -> None:
        await self._outbox.drained()

    async def close(self) -> None:
        """Close the transport (used by the `drop` fault and at shutdown)."""
        if not self.closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.drain(), timeout=2.0)
        self.closed = True
        await self._closer()

    async def shutdown(self) -> None:
        """Transport is gone: stop every job of this connection."""
        self.closed = True
        waiting: list[asyncio.Future[Any]] = [*self._unacked.values(), *self._replies.values()]
        for future in waiting:
            future.cancel()
        self._unacked.clear()
        self._replies.clear()
        jobs = [*self._tasks, *([self._sender] if self._sender else [])]
        for job in jobs:
            job.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)


def _err(code: int, message: str) -> dict[str, Any]:
    return {"code": code, "message": message}
