"""Test-only: start lingma-emulator as a real subprocess and talk JSON-RPC to it over WebSocket.

The client here is deliberately written from the protocol spec (LSP framing inside WebSocket
frames, pushes acked by id), not imported from the emulator, so the tests can catch drift.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from emulator.store import WorkDir
from emulator.user_cache import new_user
from tests.helpers import ChildProcesses, wait_until

READY_LINE = re.compile(r"Communication servers ready - WebSocket: (\d+), HTTP: (\d+), IPC: (.*)")
START_TIMEOUT = 15.0


@dataclass
class Emulator:
    work_dir: Path
    ws_port: int
    http_port: int
    pid: int
    ipc_path: str

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.ws_port}/"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def log(self) -> str:
        """The runtime log, `logs/lingma.log` in its work dir."""
        return (self.work_dir / "logs" / "lingma.log").read_text()


def start_emulator(
    children: ChildProcesses,
    work_dir: Path,
    *,
    env: dict[str, str] | None = None,
    extra_args: Sequence[str] = (),
    timeout: float = START_TIMEOUT,
) -> Emulator:
    """`python -m emulator start ...` with port 0, then wait for `.info.json` and the ready line."""
    args = [sys.executable, "-m", "emulator", "start", "--workDir", str(work_dir)]
    args += ["--socketPort", "0", "--httpPort", "0", *extra_args]
    info_path = work_dir / ".info.json"
    log_path = work_dir / "logs" / "lingma.log"
    # stderr duplicates logs/lingma.log; ChildProcesses(log_path=...) leaks its file handle.
    proc = children.start(args, env=env)

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"emulator exited early with {proc.returncode}")
        if not info_path.exists() or not log_path.exists():
            return False
        info = json.loads(info_path.read_text())
        return info["pid"] == proc.pid and READY_LINE.search(log_path.read_text()) is not None

    wait_until(ready, timeout, "emulator .info.json")
    info = json.loads(info_path.read_text())
    matches = READY_LINE.findall(log_path.read_text())
    ws_port, http_port, ipc = matches[-1]
    assert int(ws_port) == info["websocketPort"]
    return Emulator(work_dir, info["websocketPort"], int(http_port), info["pid"], ipc.strip())


def frame(message: dict[str, Any]) -> str:
    body = json.dumps(message, ensure_ascii=False)
    return f"Content-Length: {len(body.encode())}\r\n\r\n{body}"


class Deframer:
    """Byte buffer across frames; yields each complete JSON message."""

    def __init__(self) -> None:
        self.buffer = b""

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        self.buffer += data
        out: list[dict[str, Any]] = []
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return out
            header = self.buffer[:end].decode()
            length = int(header.split(":", 1)[1].strip())
            start = end + 4
            if len(self.buffer) < start + length:
                return out
            out.append(json.loads(self.buffer[start : start + length]))
            self.buffer = self.buffer[start + length :]


@dataclass
class RpcClient:
    """Minimal client: calls by id, acks every server request, records every event."""

    ws: aiohttp.ClientWebSocketResponse
    ack: bool = True
    events: list[dict[str, Any]] = field(default_factory=list)
    frames: int = 0
    closed: bool = False
    _next_id: int = 1000
    _pending: dict[Any, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _reader: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        deframer = Deframer()
        try:
            async for message in self.ws:
                if message.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                    break
                self.frames += 1
                data = message.data.encode() if isinstance(message.data, str) else message.data
                for item in deframer.feed(data):
                    await self._route(item)
        except (ConnectionError, aiohttp.ClientError):
            pass  # the emulator dropped us (a scripted fault); `closed` tells the tests
        finally:
            self.closed = True
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(ConnectionError("emulator closed the connection"))
            self._changed.set()

    async def _route(self, item: dict[str, Any]) -> None:
        if "method" in item:
            self.events.append(item)
            if "id" in item and self.ack:
                with contextlib.suppress(ConnectionError, aiohttp.ClientError):
                    await self.send({"jsonrpc": "2.0", "id": item["id"], "result": None})
            self._changed.set()
        elif item.get("id") in self._pending:
            self._pending.pop(item["id"]).set_result(item)

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send_str(frame(message))

    async def request(
        self, method: str, params: Any = None, *, timeout: float = 5.0
    ) -> dict[str, Any]:
        """The raw response message (result and/or error)."""
        self._next_id += 1
        request_id = self._next_id
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            message["params"] = params
        await self.send(message)
        return await asyncio.wait_for(future, timeout)

    async def call(self, method: str, params: Any | None = None) -> Any:
        response = await self.request(method, {} if params is None else params)
        assert response.get("error") is None, response
        return response["result"]

    async def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 5.0
    ) -> dict[str, Any]:
        """The first recorded event matching `predicate` (waits for it to arrive)."""
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events:
                if predicate(event):
                    return event
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.closed:
                raise AssertionError(f"no matching event; got {[e['method'] for e in self.events]}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                continue

    def of(self, method: str, request_id: str | None = None) -> list[dict[str, Any]]:
        return [
            e["params"]
            for e in self.events
            if e["method"] == method
            and (request_id is None or e["params"].get("requestId") == request_id)
        ]

    async def close(self) -> None:
        await self.ws.close()
        if self._reader is not None:
            await self._reader


async def connect(session: aiohttp.ClientSession, url: str, *, ack: bool = True) -> RpcClient:
    ws = await session.ws_connect(url, timeout=aiohttp.ClientWSTimeout(ws_close=2.0))
    client = RpcClient(ws, ack=ack)
    client.start()
    return client


def legacy_ask(
    request_id: str, text: str, *, model: str = "", session_id: str = ""
) -> dict[str, Any]:
    """chat/ask params as ZipperCode's live payload, plus the model key."""
    return {
        "requestId": request_id,
        "chatTask": "FREE_INPUT",
        "chatContext": None,
        "sessionId": session_id,
        "codeLanguage": "",
        "isReply": False,
        "source": 1,
        "questionText": text,
        "stream": True,
        "taskDefinitionType": "",
        "extra": {"modelConfig": {"key": model}} if model else None,
        "sessionType": "chat",
        "targetAgent": "",
        "pluginPayloadConfig": None,
        "mode": "normal",
        "shellType": "",
        "customModel": None,
    }


def finished(request_id: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e["method"] == "chat/finish" and e["params"]["requestId"] == request_id


def acp_finished(request_id: str) -> Callable[[dict[str, Any]], bool]:
    def match(event: dict[str, Any]) -> bool:
        params = event.get("params", {})
        update = params.get("update", {})
        return bool(
            event["method"] == "session/update"
            and params.get("_meta", {}).get("ai-coding/request-id") == request_id
            and update.get("type") == "chat_finish"
        )

    return match


def acp_updates(client: RpcClient, request_id: str) -> list[dict[str, Any]]:
    return [
        e["params"]["update"]
        for e in client.events
        if e["method"] == "session/update"
        and e["params"].get("_meta", {}).get("ai-coding/request-id") == request_id
    ]


def answer_text(client: RpcClient, request_id: str) -> str:
    return "".join(p["text"] for p in client.of("chat/answer", request_id))


def write_script(path: Path, rules: list[dict[str, Any]]) -> None:
    """Rewrite the script atomically (the emulator re-reads it when the file changes)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"rules": rules}))
    tmp.replace(path)


def short_dir(prefix: str = "emu-") -> Path:
    """A private short directory under /tmp for work dirs, scripts and record files."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


def logged_in_work_dir(path: Path, name: str = "tester") -> Path:
    """A work dir whose cache/user was written before the emulator started."""
    workdir = WorkDir(path)
    workdir.prepare()
    workdir.write_user(new_user(name))
    return path


CLOUD_READY = re.compile(r"EMULATOR cloud API ready - HTTP: (\d+)")


@dataclass
class CloudEmulator:
    """A standalone `lingma-emulator cloud` process and where its files are."""

    base_url: str
    root: Path
    work_dir: Path

    @property
    def record_path(self) -> Path:
        return self.root / "cloud-record.jsonl"

    @property
    def script_path(self) -> Path:
        return self.root / "cloud-script.json"

    def records(self) -> list[dict[str, Any]]:
        if not self.record_path.exists():
            return []
        lines = self.record_path.read_text().splitlines()
        return [json.loads(line) for line in lines if line]


def start_cloud_emulator(
    children: ChildProcesses, root: Path, *, env: dict[str, str] | None = None
) -> CloudEmulator:
    """`python -m emulator cloud --port 0` accepting the login of `root/wd` (written here)."""
    work_dir = logged_in_work_dir(root / "wd")
    knobs = {
        "LINGMA_EMULATOR_RECORD": str(root / "cloud-record.jsonl"),
        "LINGMA_EMULATOR_SCRIPT": str(root / "cloud-script.json"),
        **(env or {}),
    }
    out = root / "cloud.out"
    args = [sys.executable, "-m", "emulator", "cloud", "--port", "0", "--workDir", str(work_dir)]
    proc = children.start(["/bin/sh", "-c", 'exec "$@" >"$0" 2>&1', str(out), *args], env=knobs)

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"cloud emulator exited with {proc.returncode}")
        return out.exists() and CLOUD_READY.search(out.read_text()) is not None

    wait_until(ready, START_TIMEOUT, "the cloud emulator's ready line")
    match = CLOUD_READY.search(out.read_text())
    assert match is not None
    return CloudEmulator(f"http://127.0.0.1:{match.group(1)}", root, work_dir)


@contextlib.contextmanager
def cloud_emulator(
    prefix: str = "cld-", env: dict[str, str] | None = None
) -> Iterator[CloudEmulator]:
    """A standalone cloud stand-in in its own short directory, stopped and removed afterwards."""
    root = short_dir(prefix)
    children = ChildProcesses()
    try:
        yield start_cloud_emulator(children, root, env=env)
    finally:
        children.kill_all()
        shutil.rmtree(root, ignore_errors=True)
