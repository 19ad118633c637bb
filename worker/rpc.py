"""Runs in the worker: JSON-RPC 2.0 over Lingma's local WebSocket with LSP framing.

Wire rules (lingma-protocol.md §3.5-§3.6, §4, §11): every message is
`Content-Length: <utf8 bytes>\\r\\n\\r\\n<json>` in one text frame; incoming bytes are buffered
across frames and one frame may hold several messages. An incoming message with a `method` is a
server push: it is acknowledged when it carries an id (the runtime may stall on unacked pushes)
and only then routed; anything else with an id answers one of our calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import msgspec

log = logging.getLogger(__name__)

METHOD_NOT_FOUND = -32601
CLOSED_PUSH = "$/closed"  # handed to `on_push` when the connection ends, so waiters wake up
HEADER_END = b"\r\n\r\n"
MAX_HEADER_BYTES = 8192
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
CLIENT_NAME = "lingma-gw"
CLIENT_VERSION = "0.1.0"

PushHandler = Callable[[str, dict[str, Any]], None]


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


class LspFramingError(ValueError):
    """The byte stream cannot be parsed any more (bad header, absurd length)."""


# --------------------------------------------------------------------------- framing


def encode_message(message: dict[str, Any]) -> str:
    """One LSP-framed message as the text of one WebSocket frame (length counted in bytes)."""
    body = msgspec.json.encode(message)
    return f"Content-Length: {len(body)}\r\n\r\n{body.decode()}"


_PLAIN_HEADER = b"Content-Length: "


def _content_length(header: bytes) -> int:
    if header.startswith(_PLAIN_HEADER) and b"\r" not in header:  # what the runtime sends
        length = _parse_length(header[len(_PLAIN_HEADER) :])
    else:
        for line in header.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = _parse_length(value.strip())
                break
        else:
            raise LspFramingError(f"no Content-Length in header {header[:80]!r}")
    if not 0 <= length <= MAX_MESSAGE_BYTES:
        raise LspFramingError(f"Content-Length {length} out of range")
    return length


def _parse_length(value: bytes) -> int:
    try:
        return int(value)
    except ValueError as exc:
        raise LspFramingError(f"bad Content-Length {value!r}") from exc


class LspDecoder:
    """Incremental LSP-frame parser: feed bytes as they arrive, get whole JSON messages back.

    Parses straight out of each frame's bytes; only an unfinished tail is buffered, so the
    common case (one whole message per WebSocket frame) copies nothing.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Any]:
        if self._buffer:
            self._buffer += data
            data = bytes(self._buffer)
            self._buffer.clear()
        messages: list[Any] = []
        position = 0
        while position < len(data):
            if data[position] in b"{[":
                # Tolerated: a peer that sends bare JSON frames (the real runtime never does).
                # One that does not decode is dropped: kept, it would swallow every later frame.
                _decode_into(messages, data[position:], "unframed message")
                return messages
            end = data.find(HEADER_END, position)
            if end < 0:
                if len(data) - position > MAX_HEADER_BYTES:
                    raise LspFramingError("header too long")
                break
            body_start = end + len(HEADER_END)
            body_end = body_start + _content_length(data[position:end])
            if body_end > len(data):
                break
            _decode_into(messages, data[body_start:body_end], "JSON-RPC body")
            position = body_end
        if position < len(data):
            self._buffer += data[position:]
        return messages


def _decode_into(messages: list[Any], body: bytes, what: str) -> None:
    try:
        messages.append(msgspec.json.decode(body))
    except msgspec.DecodeError:
        log.warning("dropping an undecodable %s (%d bytes)", what, len(body))


# --------------------------------------------------------------------------- discovery


class Endpoint(msgspec.Struct, frozen=True):
    port: int
    pid: int | None = None
    source: str = "explicit"


def read_discovery(work_dir: str | Path) -> Endpoint | None:
    """The runtime's port from `<workDir>/.info.json`, else the legacy three-line `.info`."""
    root = Path(work_dir)
    with contextlib.suppress(OSError, ValueError, msgspec.DecodeError):
        info = msgspec.json.decode((root / ".info.json").read_bytes())
        if isinstance(info, dict) and int(info.get("websocketPort") or 0) > 0:
            pid = info.get("pid")
            return Endpoint(int(info["websocketPort"]), int(pid) if pid else None, ".info.json")
    with contextlib.suppress(OSError, ValueError):
        lines = (root / ".info").read_text().split("\n")
        port = int(lines[0].strip())
        pid = int(lines[1].strip()) if len(lines) > 1 and lines[1].strip() else None
        if port > 0:
            return Endpoint(port, pid, ".info")
    return None


def remove_discovery(work_dir: str | Path) -> None:
    """Forget a previous run's files so readiness waits for the new binary's own."""
    for name in (".info.json", ".info"):
        with contextlib.suppress(FileNotFoundError):
            (Path(work_dir) / name).unlink()


def machine_token_headers(work_dir: str | Path) -> dict[str, str]:
    """`Cosy-MachineToken` when the work dir has a non-empty token (QoderCN builds want it)."""
    with contextlib.suppress(OSError, ValueError, msgspec.DecodeError):
        data = msgspec.json.decode((Path(work_dir) / "cache" / "machine_token.json").read_bytes())
        token = data.get("token") if isinstance(data, dict) else None
        if isinstance(token, str) and token:
            return {"Cosy-MachineToken": token}
    return {}


def initialize_params(workspace: Path) -> dict[str, Any]:
    uri = workspace.resolve().as_uri()
    return {
        "processId": os.getpid(),
        "clientInfo": {"name": CLIENT_NAME, "version": CLIENT_VERSION},
        "rootUri": uri,
        "capabilities": {},
        "workspaceFolders": [{"uri": uri, "name": workspace.name}],
    }


def acp_initialize_params() -> dict[str, Any]:
    return {"protocolVersion": 1, "clientCapabilities": {}, "timestamp": int(time.time() * 1000)}


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


# --------------------------------------------------------------------------- connection


class RpcConnection:
    """One WebSocket to the runtime: calls with per-call timeouts, pushes routed to `on_push`."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, url: str) -> None:
        self.url = url
        self.on_push: PushHandler | None = None
        self.server_info: dict[str, Any] = {}
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
    ) -> RpcConnection:
        """Connect to `/` (Lingma), falling back to `/ws` (QoderCN) when `/` is not a socket."""
        last: Exception | None = None
        for path in ("/", "/ws"):
            url = f"ws://127.0.0.1:{port}{path}"
            try:
                async with asyncio.timeout(timeout):
                    ws = await session.ws_connect(
                        url, headers=headers, max_msg_size=MAX_MESSAGE_BYTES
                    )
            except aiohttp.WSServerHandshakeError as exc:
                last = exc
                continue
            except (aiohttp.ClientError, OSError) as exc:  # refused, reset, ...
                raise RpcClosed(f"cannot connect to port {port}: {exc}") from exc
            return cls(ws, url)
        raise RpcClosed(f"no WebSocket on port {port}: {last}")

    @property
    def closed(self) -> bool:
        return self._reader.done()

    async def initialize(self, workspace: Path, timeout: float) -> dict[str, Any]:
        """LSP-style initialize with a workspace; retried ACP-style if the runtime refuses it."""
        try:
            result = await self.call("initialize", initialize_params(workspace), timeout)
        except RpcError:
            result = await self.call("initialize", acp_initialize_params(), timeout)
        if isinstance(result, dict):
            info = result.get("serverInfo")
            self.server_info = info if isinstance(info, dict) else {}
        return result if isinstance(result, dict) else {}

    async def call(self, method: str, params: dict[str, Any] | None, timeout: float) -> Any:
        if self.closed:
            raise RpcClosed(f"{method}: connection closed")
        request_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        message = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params or {}}
        try:
            await self._send(message)
            async with asyncio.timeout(timeout):
                return await future
        except RpcError as exc:
            exc.method = method
            raise
        finally:
            self._pending.pop(request_id, None)

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
        with contextlib.suppress(Exception):
            await self._ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._reader

    async def _send(self, message: dict[str, Any]) -> None:
        try:
            await self._ws.send_str(encode_message(message))
        except (ConnectionError, RuntimeError, aiohttp.ClientError) as exc:
            raise RpcClosed(f"send failed: {exc}") from exc

    async def _read_loop(self) -> None:
        try:
            async for frame in self._ws:
                if frame.type == aiohttp.WSMsgType.TEXT:
                    data = frame.data.encode()
                elif frame.type == aiohttp.WSMsgType.BINARY:
                    data = frame.data
                else:
                    break
                for message in self._decoder.feed(data):
                    await self._dispatch(message)
        except (LspFramingError, aiohttp.ClientError, ConnectionError) as exc:
            log.warning("runtime connection %s broken: %s", self.url, exc)
        finally:
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(RpcClosed(f"{self.url}: connection closed"))
            handler = self.on_push
            if handler is not None:
                handler(CLOSED_PUSH, {})

    async def _dispatch(self, message: Any) -> None:
        if not isinstance(message, dict):
            return
        method = message.get("method")
        if isinstance(method, str):  # a push: dispatch on `method` first (§3.6)
            raw_params = message.get("params")
            params = raw_params if isinstance(raw_params, dict) else {"value": raw_params}
            push_id = message.get("id")
            if push_id is not None:
                reply = {"jsonrpc": "2.0", "id": push_id, "result": push_reply(method, params)}
                with contextlib.suppress(RpcClosed):
                    await self._send(reply)
            handler = self.on_push
            if handler is not None:
                handler(method, params)
            return
        call_id = message.get("id")
        # Only our own integer ids answer a call; a list or object id must not break the loop.
        future = self._pending.get(call_id) if isinstance(call_id, int) else None
        if future is None or future.done():
            return
        error = message.get("error")
        if error:
            code = error.get("code", 0) if isinstance(error, dict) else 0
            text = error.get("message", "") if isinstance(error, dict) else str(error)
            future.set_exception(RpcError(code if isinstance(code, int) else 0, str(text)))
        else:
            future.set_result(message.get("result"))
