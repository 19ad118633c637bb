"""Runs in the worker: one JSON-RPC 2.0 connection to the Lingma runtime over its WebSocket.

An incoming message with a `method` is a server push: it is acknowledged when it carries an id
(the runtime may stall on unacked pushes, lingma-protocol.md §3.6, §6.1) and then routed to the
live request it belongs to (worker/routes.py); anything else with an id answers one of our
calls. One connection serves many chats at once: ACP chats multiplex on it by request id, and
`ask_slot` keeps legacy `chat/ask` to one in flight per connection (§11.7). The framing lives
in worker/lsp.py; frames written in one loop turn share one socket write (worker/ws_batch.py).
Text frames stay bytes both ways (`decode_text=False`, `send_frame`): the framing and msgspec
work on UTF-8 bytes, so decoding each frame to `str` and back would only cost time.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from worker.lsp import MAX_MESSAGE_BYTES, LspDecoder, LspFramingError, encode_message
from worker.routes import PushRouter
from worker.ws_batch import batch_writes

log = logging.getLogger(__name__)

METHOD_NOT_FOUND = -32601
CLIENT_NAME = "lingma-gw"
CLIENT_VERSION = "0.1.0"

Tap = Callable[[str, dict[str, Any]], None]  # ("out" | "in", message): the doctor's transcript


class RpcError(Exception):
    """An error object returned by the runtime for one of our calls."""

    def __init__(self, code: int, message: str, method: str = "") -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message
        self.method = method

    def __str__(self) -> str:
        return f"{self.method or 'rpc'} failed ({self.code}): {self.message}"


class RpcClosed(ConnectionError):
    """The WebSocket to the runtime is gone; pending calls fail with this."""


class ConnState(enum.StrEnum):
    OPEN = "open"
    BROKEN = "broken"  # a send failed: nothing new goes here, the reader is winding down
    CLOSED = "closed"  # we closed it
    LOST = "lost"  # the runtime closed it, or it broke


def initialize_params(workspace: Path) -> dict[str, Any]:
    """One object for both styles of §4: LSP (workspace) and ACP (protocol version) fields.

    LSP-style callers avoid `get mtree failed: workspacePath is empty`; ACP-style ones are what
    lingma-proxy sends. The runtime decodes into a Go struct, so extra fields are harmless.
    """
    uri = workspace.resolve().as_uri()
    return {
        "processId": os.getpid(),
        "clientInfo": {"name": CLIENT_NAME, "version": CLIENT_VERSION},
        "rootUri": uri,
        "capabilities": {},
        "workspaceFolders": [{"uri": uri, "name": workspace.name}],
        "protocolVersion": 1,
        "clientCapabilities": {},
        "timestamp": int(time.time() * 1000),
    }


def refused(result: Any) -> bool:
    """Did a call's result say no? `success` (chat/ask, config/*) or `isSuccess` (plugin DTOs).

    Both spellings occur (lingma-protocol.md §6.10); a result with neither is not a refusal.
    """
    if not isinstance(result, dict):
        return False
    return result.get("success", result.get("isSuccess")) is False


def push_reply(method: str, params: dict[str, Any]) -> Any:
    """What we answer to a server request: `null`, except where the runtime waits for a verdict."""
    if method == "tool/invoke":
        # The gateway runs no IDE tools: decline instead of leaving the runtime waiting.
        return {
            "toolCallId": params.get("toolCallId", ""),
            "name": params.get("name", ""),
            "success": False,
            "errorMessage": "tools are not executed by lingma-gw",
        }
    if method == "session/request_permission":
        return {
            "requestId": params.get("requestId", ""),
            "successful": False,
            "errorMessage": "permission requests are declined by lingma-gw",
        }
    return None


def _time_out(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())


class RpcConnection:
    """One WebSocket to the runtime: calls with per-call timeouts, pushes routed by request."""

    def __init__(
        self, ws: aiohttp.ClientWebSocketResponse[bool], url: str, *, tap: Tap | None = None
    ) -> None:
        self.url = url
        self.routes = PushRouter()
        self.ask_slot = asyncio.Lock()  # one in-flight legacy chat/ask per connection (§11.7)
        self.server_info: dict[str, Any] = {}
        self.opened_at = time.monotonic()
        self.state = ConnState.OPEN
        self.on_lost: Callable[[RpcConnection], None] | None = None
        self.tap = tap
        self._ws = ws
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._decoder = LspDecoder()
        self._reader = asyncio.create_task(self._read_loop())

    @classmethod
    async def open(
        cls,
        session: aiohttp.ClientSession,
        port: int,
        *,
        timeout: float,
        headers: dict[str, str] | None = None,
        tap: Tap | None = None,
    ) -> RpcConnection:
        """Connect to `/` (Lingma), falling back to `/ws` (QoderCN) when `/` is not a socket."""
        last: Exception | None = None
        for path in ("/", "/ws"):
            url = f"ws://127.0.0.1:{port}{path}"
            try:
                async with asyncio.timeout(timeout):
                    ws = await session.ws_connect(
                        url, headers=headers, max_msg_size=MAX_MESSAGE_BYTES, decode_text=False
                    )
            except aiohttp.WSServerHandshakeError as exc:
                last = exc
                continue
            except (aiohttp.ClientError, OSError) as exc:  # refused, reset, ...
                raise RpcClosed(f"cannot connect to port {port}: {exc}") from exc
            batch_writes(ws)
            return cls(ws, url, tap=tap)
        raise RpcClosed(f"no WebSocket on port {port}: {last}")

    @property
    def closed(self) -> bool:
        return self.state is not ConnState.OPEN or self._reader.done()

    async def initialize(self, workspace: Path, timeout: float) -> dict[str, Any]:
        """`initialize` with the merged params; if even those are refused, `{}` (PA, §4)."""
        try:
            result = await self.call("initialize", initialize_params(workspace), timeout)
        except RpcError as exc:
            log.info("initialize refused (%s): retrying with empty params", exc)
            result = await self.call("initialize", {}, timeout)
        if isinstance(result, dict):
            info = result.get("serverInfo")
            self.server_info = info if isinstance(info, dict) else {}
        return result if isinstance(result, dict) else {}

    async def call(self, method: str, params: dict[str, Any] | None, timeout: float) -> Any:
        future = await self.begin_call(method, params or {})
        # A timer handle that fails the answer's future, rather than an asyncio.timeout
        # context (an object, a reschedule and a task cancellation path on every call).
        timer = asyncio.get_running_loop().call_later(timeout, _time_out, future)
        try:
            return await future
        finally:
            timer.cancel()
            if not future.done():
                future.cancel()

    async def begin_call(self, method: str, params: dict[str, Any]) -> asyncio.Future[Any]:
        """Send a call whose answer may come long after its side effects (ACP `session/prompt`).

        Returns the answer's future once the call is sent: the caller waits on it alongside the
        pushes, under its own deadline, so the call needs no task or timer of its own (one of
        each per open stream otherwise). Cancelling the future forgets the call.
        """
        if self.closed:
            raise RpcClosed(f"{method}: connection closed")
        request_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        future.add_done_callback(lambda done: self._settled(request_id, method, done))
        message = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
        try:
            await self._send(message)
        except BaseException:
            future.cancel()
            raise
        return future

    def _settled(self, request_id: int, method: str, future: asyncio.Future[Any]) -> None:
        self._pending.pop(request_id, None)
        exc = None if future.cancelled() else future.exception()
        if isinstance(exc, RpcError):
            exc.method = method

    async def notify(self, method: str, params: dict[str, Any] | None = None) -> None:
        await self._send({"jsonrpc": "2.0", "method": method, "params": params or {}})

    async def close(self) -> None:
        if self.state in (ConnState.OPEN, ConnState.BROKEN):
            self.state = ConnState.CLOSED
        with contextlib.suppress(Exception):
            await self._ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._reader

    async def _send(self, message: dict[str, Any]) -> None:
        if self.tap is not None:
            self.tap("out", message)
        try:
            await self._ws.send_frame(encode_message(message), aiohttp.WSMsgType.TEXT)
        except (ConnectionError, RuntimeError, aiohttp.ClientError) as exc:
            if self.state is ConnState.OPEN:  # no later caller should pick this one any more
                self.state = ConnState.BROKEN
                self._reader.cancel()
            raise RpcClosed(f"send failed: {exc}") from exc

    async def _read_loop(self) -> None:
        try:
            async for frame in self._ws:
                if frame.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                    break
                data = frame.data
                if isinstance(data, str):  # a socket that decodes text frames after all
                    data = data.encode()
                for message in self._decoder.feed(data):
                    # `_dispatch` inlined: most messages need no ack, so no coroutine each.
                    if (ack := self._route(message)) is not None:
                        await self._acknowledge(ack)
        except (LspFramingError, aiohttp.ClientError, ConnectionError) as exc:
            log.warning("runtime connection %s broken: %s", self.url, exc)
        finally:
            self._ended()

    def _ended(self) -> None:
        lost = self.state in (ConnState.OPEN, ConnState.BROKEN)
        if lost:
            self.state = ConnState.LOST
        for future in self._pending.values():
            if not future.done():
                future.set_exception(RpcClosed(f"{self.url}: connection closed"))
        self.routes.close_all()
        if lost and self.on_lost is not None:
            self.on_lost(self)

    async def _dispatch(self, message: Any) -> None:
        """One incoming message: routed, and acknowledged when it is a push with an id."""
        if (ack := self._route(message)) is not None:
            await self._acknowledge(ack)

    async def _acknowledge(self, ack: dict[str, Any]) -> None:
        with contextlib.suppress(RpcClosed):
            await self._send(ack)

    def _route(self, message: Any) -> dict[str, Any] | None:
        """Route one incoming message; returns the ack a push with an id needs."""
        if not isinstance(message, dict):
            return None
        if self.tap is not None:
            self.tap("in", message)
        method = message.get("method")
        if isinstance(method, str):  # a push: dispatch on `method` first (§3.6)
            raw_params = message.get("params")
            params = raw_params if isinstance(raw_params, dict) else {"value": raw_params}
            push_id = message.get("id")
            self.routes.deliver(method, params)
            if push_id is None:
                return None
            return {"jsonrpc": "2.0", "id": push_id, "result": push_reply(method, params)}
        call_id = message.get("id")
        # Only our own integer ids answer a call; a list or object id must not break the loop.
        future = self._pending.get(call_id) if isinstance(call_id, int) else None
        if future is None or future.done():
            return None
        error = message.get("error")
        if error:
            code = error.get("code", 0) if isinstance(error, dict) else 0
            text = error.get("message", "") if isinstance(error, dict) else str(error)
            future.set_exception(RpcError(code if isinstance(code, int) else 0, str(text)))
        else:
            future.set_result(message.get("result"))
        return None
