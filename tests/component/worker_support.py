"""Test-only: run a real worker process (`python -m worker --spec FILE`) over the emulator.

The worker's `binary` is a generated shell wrapper that execs `python -m emulator "$@"`, so the
worker starts, watches and kills it exactly as it would the real Lingma binary. Tests talk to
the worker over its Unix socket with the production MuxClient.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import aiohttp
import msgspec

from protocol.channel import MuxClient
from protocol.chat import ChatRequest, ChatTurn, Failure, Finish, Message, ToolSpec
from protocol.child_socket import Ping, Pong
from protocol.specs import WorkerSpec
from protocol.vocabulary import ChildState
from protocol.worker_socket import LoginInfo, LoginStart, LoginStatusQuery
from tests import specs
from tests.helpers import PYTHON, REPO, ChildProcesses, wait_until

START_TIMEOUT = 20.0


def write_binary_wrapper(directory: Path) -> Path:
    """An executable that behaves like `Lingma`: same CLI, started and killed like it."""
    path = directory / "Lingma"
    path.write_text(f'#!/bin/sh\nexec "{PYTHON}" -m emulator "$@"\n')
    path.chmod(0o755)
    return path


@dataclass
class WorkerProcess:
    spec: WorkerSpec
    root: Path
    proc: Any

    @property
    def record_path(self) -> Path:
        return self.root / "record.jsonl"

    @property
    def script_path(self) -> Path:
        return self.root / "script.json"

    @property
    def log_path(self) -> Path:
        return self.root / "worker.log"

    def records(self) -> list[dict[str, Any]]:
        if not self.record_path.exists():
            return []
        return [json.loads(line) for line in self.record_path.read_text().splitlines() if line]

    def emulator_log(self) -> str:
        path = Path(self.spec.work_dir) / "logs" / "lingma.log"
        return path.read_text() if path.exists() else ""

    def set_script(self, rules: Sequence[dict[str, Any]]) -> None:
        """Rewrite the emulator's script (it re-reads the file when it changes)."""
        tmp = self.script_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"rules": list(rules)}))
        os.replace(tmp, self.script_path)


def make_spec(
    root: Path, *, name: str = "acct-a", env: dict[str, str] | None = None, **overrides: Any
) -> WorkerSpec:
    binary_env = {
        "PYTHONPATH": str(REPO),
        "LINGMA_EMULATOR_RECORD": str(root / "record.jsonl"),
        "LINGMA_EMULATOR_SCRIPT": str(root / "script.json"),
        "LINGMA_EMULATOR_LOG_LEVEL": "debug",  # per-request lines, e.g. the 499 of a stopped turn
        **(env or {}),
    }
    fields: dict[str, Any] = {
        "name": name,
        "socket_path": str(root / "w.sock"),
        "binary": str(write_binary_wrapper(root)),
        "work_dir": str(root / "wd"),
        "binary_env": binary_env,
        "startup_timeout_s": 15.0,
        "rpc_timeout_s": 10.0,
        "login": specs.login_spec(auto_login=False),
    }
    fields.update(overrides)
    return specs.worker_spec(**fields)


def start_worker(children: ChildProcesses, spec: WorkerSpec, root: Path) -> WorkerProcess:
    spec_path = root / "spec.json"
    spec_path.write_bytes(msgspec.json.encode(spec))
    log_path = root / "worker.log"
    # The shell only redirects and execs (same pid); ChildProcesses(log_path=...) leaks its handle.
    command = 'exec "$0" -m worker --spec "$1" >>"$2" 2>&1'
    proc = children.start(["/bin/sh", "-c", command, PYTHON, str(spec_path), str(log_path)])

    def listening() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"worker exited with {proc.returncode}:\n{log_path.read_text()}")
        return os.path.exists(spec.socket_path)

    wait_until(listening, START_TIMEOUT, "the worker socket")
    return WorkerProcess(spec, root, proc)


async def pong(client: MuxClient) -> Pong:
    reply = await client.call(lambda i: Ping(id=i, sent_at=time.time()), 5.0)
    assert isinstance(reply, Pong)
    return reply


async def wait_state(
    client: MuxClient, *states: ChildState, timeout: float = START_TIMEOUT
) -> Pong:
    deadline = time.monotonic() + timeout
    while True:
        last = await pong(client)
        if last.state in states:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"worker stayed {last.state}, wanted {states}: {last}")
        await asyncio.sleep(0.05)


async def login_via_callback(client: MuxClient, user: str = "demo", *, ready: bool = True) -> Pong:
    """Manual login as an operator would do it, finished by the emulator's test-only V1 callback.

    `ready=False`: return once the runtime is logged in, whatever else keeps the worker from READY.
    """
    await wait_state(client, ChildState.DEGRADED, ChildState.READY)
    info = await client.call(lambda i: LoginStart(id=i), 10.0)
    assert isinstance(info, LoginInfo) and info.url, info
    query = parse_qs(urlparse(info.url).query)
    nonce, port = query["nonce"][0], query["port"][0]
    callback = f"http://127.0.0.1:{port}/auth/callback"
    async with aiohttp.ClientSession() as http:
        params = {"state": nonce, "uid": f"uid-{user}", "name": user}
        async with http.get(callback, params=params) as response:
            assert response.status == 200, await response.text()
    status = await client.call(lambda i: LoginStatusQuery(id=i), 10.0)
    assert status.login == "logged_in", status
    return await wait_state(client, ChildState.READY) if ready else await pong(client)


@dataclass
class ChatResult:
    events: list[Any]

    @property
    def text(self) -> str:
        return "".join(e.text for e in self.events if type(e).__name__ == "Delta")

    @property
    def reasoning(self) -> str:
        return "".join(e.text for e in self.events if type(e).__name__ == "Reasoning")

    @property
    def end(self) -> Finish | Failure:
        last = self.events[-1]
        assert isinstance(last, Finish | Failure), self.events
        return last

    @property
    def finish(self) -> Finish:
        end = self.end
        assert isinstance(end, Finish), end
        return end

    @property
    def failure(self) -> Failure:
        end = self.end
        assert isinstance(end, Failure), end
        return end


def user(text: str) -> Message:
    return Message(role="user", text=text)


async def chat(
    client: MuxClient,
    messages: Sequence[Message] | str,
    *,
    model: str = "auto",
    stream: bool = True,
    tools: Sequence[ToolSpec] = (),
    scope: str = "test-scope",
    timeout: float = 20.0,
    turns: Sequence[ChatTurn] = (),
) -> ChatResult:
    """`turns` (structured, what a cloud worker reads) go along when given."""
    texts = [user(messages)] if isinstance(messages, str) else list(messages)
    request = ChatRequest(
        id=client.next_id(),
        request_id=f"test-{time.monotonic_ns()}",
        model=model,
        messages=texts,
        tools=list(tools),
        stream=stream,
        scope=scope,
        turns=list(turns),
    )
    events: list[Any] = []
    async with asyncio.timeout(timeout):
        async for event in client.stream(request):
            events.append(event)
    return ChatResult(events)


def request_ids_stopped(emulator_log: str) -> set[str]:
    """Request ids the emulator finished with the cancelled status (499)."""
    pattern = re.compile(r"requestId: (\S+) status: 499")
    return set(pattern.findall(emulator_log))


async def log_in(process: WorkerProcess, *, ready: bool = True) -> None:
    """Log a freshly started worker's account in through the emulator's V1 callback."""
    client = MuxClient(process.spec.socket_path)
    try:
        await login_via_callback(client, ready=ready)
    finally:
        await client.close()


@asynccontextmanager
async def ready_client(process: WorkerProcess) -> AsyncIterator[MuxClient]:
    """A client for a test: the emulator script cleared, the worker READY, closed afterwards."""
    process.set_script([])
    mux = MuxClient(process.spec.socket_path)
    await wait_state(mux, ChildState.READY)
    try:
        yield mux
    finally:
        await mux.close()


@contextmanager
def logged_in_worker(make_spec_in: Callable[[Path], WorkerSpec]) -> Iterator[WorkerProcess]:
    """A worker started on `make_spec_in(root)` in a fresh short root and logged in; stopped
    and removed afterwards (for module-scoped fixtures)."""
    root = Path(tempfile.mkdtemp(prefix="lgw-", dir="/tmp"))
    children = ChildProcesses()
    try:
        process = start_worker(children, make_spec_in(root), root)
        asyncio.run(log_in(process))
        yield process
    finally:
        children.kill_all()
        shutil.rmtree(root, ignore_errors=True)
