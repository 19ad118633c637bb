"""Runs in the bench's load generator: a minimal Lingma JSON-RPC client, the direct baseline.

It speaks exactly what a worker must (lingma-protocol.md §3.5 framing, §4 handshake, and per
request either the ACP flow of §5.4 — session/new, session/set_model, session/prompt, then
session/update chunks up to the chat_finish notification, which is what a worker does when the
runtime offers it — or the legacy chat/ask of §5.3) and nothing more: no HTTP, no IPC, no
session cache. What it measures is the physical limit for lingma-gw's path through the same
runtime.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import uuid
from typing import Any

import aiohttp
import msgspec

from bench.targets import ChunkMeter, LingmaTarget, Sample

HEADER_END = b"\r\n\r\n"
ACP_REQUEST_ID = "ai-coding/request-id"
ACP_CWD = "/tmp"
LOGGED_IN = 2
BENCH_USER = "demo"

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


class _Turn:
    """One chat/ask in flight: its first-token time, relayed chunks, and its end."""

    __slots__ = ("chunks", "done", "first_token", "status")

    def __init__(self) -> None:
        self.first_token: float | None = None
        self.chunks = 0
        self.status = 0
        self.done = asyncio.Event()


class LingmaConnection:
    """One WebSocket to the runtime: framing, acks of server pushes, replies by id."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, meter: ChunkMeter | None) -> None:
        self.ws = ws
        self.meter = meter
        self._ids = itertools.count(1)
        self._replies: dict[int, asyncio.Future[Any]] = {}
        self.turns: dict[str, _Turn] = {}
        self._buffer = bytearray()
        self._acks: set[asyncio.Task[None]] = set()
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def open(
        cls, session: aiohttp.ClientSession, url: str, meter: ChunkMeter | None = None
    ) -> LingmaConnection:
        ws = await session.ws_connect(url, max_msg_size=0, autoping=True)
        conn = cls(ws, meter)
        try:
            await conn.call("initialize", {"processId": None, "clientInfo": {"name": "bench"}})
            status = await conn.call("auth/status", {})
            if not isinstance(status, dict) or status.get("status") != LOGGED_IN:
                # The emulator's browser-less login (lingma-protocol.md §5.1 auth/device_login).
                await conn.call("auth/device_login", {"username": BENCH_USER})
        except BaseException:
            await conn.close()
            raise
        return conn

    async def _send(self, message: dict[str, Any]) -> None:
        body = _encode(message)  # the header counts UTF-8 bytes; one text frame per message
        await self.ws.send_str(f"Content-Length: {len(body)}\r\n\r\n{body.decode()}")

    async def call(self, method: str, params: dict[str, Any], timeout: float = 30.0) -> Any:
        request_id = next(self._ids)
        reply: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._replies[request_id] = reply
        await self._send({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
        try:
            async with asyncio.timeout(timeout):
                return await reply
        finally:
            self._replies.pop(request_id, None)

    async def _read(self) -> None:
        try:
            async for msg in self.ws:
                if msg.type is aiohttp.WSMsgType.TEXT:
                    self._feed(msg.data.encode())
                elif msg.type is aiohttp.WSMsgType.BINARY:
                    self._feed(msg.data)
                else:
                    break
        finally:
            self._fail_all()

    def _feed(self, data: bytes) -> None:
        self._buffer += data
        while True:
            end = self._buffer.find(HEADER_END)
            if end < 0:
                return
            length = _content_length(bytes(self._buffer[:end]))
            start = end + len(HEADER_END)
            if len(self._buffer) < start + length:
                return
            body = bytes(self._buffer[start : start + length])
            del self._buffer[: start + length]
            self._dispatch(_decode(body))

    def _dispatch(self, message: dict[str, Any]) -> None:
        method = message.get("method")
        if method is None:
            reply = self._replies.get(message.get("id", -1))
            if reply is not None and not reply.done():
                if message.get("error"):
                    reply.set_exception(RuntimeError(str(message["error"])))
                else:
                    reply.set_result(message.get("result"))
            return
        if "id" in message:  # a server push sent as a request: acknowledge it
            ack = {"jsonrpc": "2.0", "id": message["id"], "result": None}
            task = asyncio.get_running_loop().create_task(self._send(ack))
            self._acks.add(task)
            task.add_done_callback(self._acks.discard)
        self._on_push(method, message.get("params") or {})

    def _on_push(self, method: str, params: dict[str, Any]) -> None:
        if method == "session/update":
            self._on_acp_update(params)
            return
        turn = self.turns.get(params.get("requestId", ""))
        if turn is None:
            return
        if method == "chat/answer" and params.get("text"):
            self._chunk(turn)
        elif method == "chat/finish":
            turn.status = int(params.get("statusCode", 0))
            turn.done.set()

    def _on_acp_update(self, params: dict[str, Any]) -> None:
        meta = params.get("_meta") or {}
        turn = self.turns.get(meta.get(ACP_REQUEST_ID, ""))
        update = params.get("update") or {}
        if turn is None:
            return
        kind = update.get("sessionUpdate")
        if kind == "agent_message_chunk" and (update.get("content") or {}).get("text"):
            self._chunk(turn)
        elif kind == "notification" and update.get("type") == "chat_finish":
            turn.status = int((update.get("data") or {}).get("statusCode", 200))
            turn.done.set()

    def _chunk(self, turn: _Turn) -> None:
        turn.chunks += 1
        if self.meter is not None:
            self.meter.add(1)
        if turn.first_token is None:
            turn.first_token = time.monotonic()

    def _fail_all(self) -> None:
        for reply in self._replies.values():
            if not reply.done():
                reply.set_exception(ConnectionError("runtime connection closed"))
        for turn in self.turns.values():
            turn.done.set()

    async def ask(
        self, question: str, model: str, timeout: float, flow: str = "acp"
    ) -> tuple[_Turn, float]:
        """One question until the end of its answer; returns the turn and when it started."""
        request_id = uuid.uuid4().hex
        turn = self.turns[request_id] = _Turn()
        started = time.monotonic()
        try:
            async with asyncio.timeout(timeout):
                if flow == "legacy":
                    await self._legacy_ask(request_id, question, model)
                else:
                    await self._acp_prompt(request_id, question, model)
                await turn.done.wait()
        finally:
            self.turns.pop(request_id, None)
        return turn, started

    async def _legacy_ask(self, request_id: str, question: str, model: str) -> None:
        accepted = await self.call("chat/ask", ask_params(request_id, question, model))
        if not (isinstance(accepted, dict) and accepted.get("success")):
            raise RuntimeError(f"chat/ask refused: {accepted!r}"[:200])

    async def _acp_prompt(self, request_id: str, question: str, model: str) -> None:
        """A fresh session per question, as a worker opens one on a session-cache miss."""
        now = int(time.time() * 1000)
        new = {"cwd": ACP_CWD, "mcpServers": [], "_meta": {}, "timestamp": now}
        created = await self.call("session/new", new)
        session_id = created.get("sessionId") if isinstance(created, dict) else None
        if not session_id:
            raise RuntimeError(f"session/new answered {created!r}"[:200])
        model_params = {"sessionId": session_id, "modelId": model, "timestamp": now, "_meta": {}}
        await self.call("session/set_model", model_params)
        # `ai-coding/mode` is "agent" or absent, as public clients send it (§5.4).
        meta = {ACP_REQUEST_ID: request_id, "ai-coding/model": model}
        prompt = [{"type": "text", "text": question}]
        await self.call(
            "session/prompt", {"sessionId": session_id, "prompt": prompt, "_meta": meta}
        )

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


def _content_length(header: bytes) -> int:
    for line in header.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    raise ValueError(f"no Content-Length in {header!r}")


def ask_params(request_id: str, question: str, model: str) -> dict[str, Any]:
    """The 17-field chat/ask of lingma-protocol.md §5.3, with the model in extra.modelConfig."""
    return {
        "requestId": request_id,
        "chatTask": "FREE_INPUT",
        "chatContext": None,
        "sessionId": "",
        "codeLanguage": "",
        "isReply": False,
        "source": 1,
        "questionText": question,
        "stream": True,
        "taskDefinitionType": "",
        "extra": {"modelConfig": {"key": model}},
        "sessionType": "chat",
        "targetAgent": "",
        "pluginPayloadConfig": None,
        "mode": "normal",
        "shellType": "",
        "customModel": None,
    }


class LingmaRequester:
    """A load-generator client task: its own connection, one ask at a time."""

    def __init__(
        self, target: LingmaTarget, session: aiohttp.ClientSession, meter: ChunkMeter
    ) -> None:
        self.target = target
        self.session = session
        self.meter = meter
        self.conn: LingmaConnection | None = None

    async def once(self) -> Sample:
        if self.conn is None:
            self.conn = await LingmaConnection.open(self.session, self.target.ws_url, self.meter)
        try:
            target = self.target
            turn, started = await self.conn.ask(target.question, target.model, 30.0, target.flow)
        except (RuntimeError, ConnectionError, TimeoutError) as exc:
            await self.close()
            return Sample(False, error=str(exc)[:200])
        if turn.status != 200:
            return Sample(False, error=f"chat/finish statusCode {turn.status}")
        ttft = turn.first_token - started if turn.first_token is not None else None
        return Sample(True, ttft_s=ttft, chunks=turn.chunks)

    async def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            await conn.close()
