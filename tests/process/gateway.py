"""Test-only: the real `lingma-gw serve` as a subprocess over emulated accounts.

Accounts run `lingma-emulator` (the venv's console script) with auto-login off; `login_all`
logs each one in the way an operator would (`LoginRequest` on the control socket -> manual
URL) and finishes it through the emulator's test-only callback, so no browser is needed.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import aiohttp
import msgspec
import psutil

from protocol.control_socket import ChildStatus, LoginRequest, OkReply, StatusReply, StatusRequest
from protocol.vocabulary import ChildState
from supervisor.control import request
from tests.helpers import PYTHON, ChildProcesses, free_port, wait_until_async

API_KEY = "sk-process-test"
EMULATOR = "lingma-emulator"
# The console script itself, as systemd's ExecStart runs it.
LINGMA_GW = [os.path.join(os.path.dirname(PYTHON), "lingma-gw")]


def render_config(root: Path, port: int, accounts: dict[str, str], *, fronts: int = 1) -> str:
    lines = [
        "[server]",
        f'listen = "127.0.0.1:{port}"',
        f"fronts = {fronts}",
        f'runtime_dir = "{root / "rt"}"',
        f'state_dir = "{root / "st"}"',
        'log_level = "info"',
        "grace_period_s = 3",
        "ping_interval_s = 0.25",
        "ping_timeout_s = 3",
        "stats_interval_s = 1",
        'progress = "on"',
        "[auth]",
        f'api_keys = ["{API_KEY}"]',
        "[browser]",
        "auto_login = false",
    ]
    for name, binary in accounts.items():
        lines += ["[[accounts]]", f'name = "{name}"', f'binary = "{binary}"']
    return "\n".join(lines) + "\n"


@dataclass
class SupervisedGateway:
    root: Path
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def config_path(self) -> Path:
        return self.root / "gw.toml"

    @property
    def control(self) -> str:
        return str(self.root / "rt" / "control.sock")

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> str:
        path = self.root / "gw.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def write_config(self, accounts: dict[str, str], extra: str = "") -> None:
        """`extra` is appended: TOML keys there belong to the last account."""
        self.config_path.write_text(render_config(self.root, self.port, accounts) + extra)

    async def status(self) -> StatusReply:
        reply = await request(self.control, StatusRequest(), timeout=5)
        assert isinstance(reply, StatusReply), reply
        return reply

    async def rows(self) -> dict[str, ChildStatus]:
        reply = await self.status()
        return {row.name: row for row in [*reply.workers, *reply.fronts]}

    async def wait_states(self, want: dict[str, ChildState], timeout: float = 30) -> None:
        async def reached() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"lingma-gw exited {self.proc.returncode}:\n{self.log}")
            try:
                rows = await self.rows()
            except (OSError, AssertionError, Exception):  # not up yet
                return False
            return all(name in rows and rows[name].state == s for name, s in want.items())

        await wait_until_async(reached, timeout, f"states {want}")

    async def login(self, name: str) -> None:
        """Operator login: the manual URL from the worker, completed by the emulator callback."""
        reply = await request(self.control, LoginRequest(name=name), timeout=10)
        assert isinstance(reply, OkReply) and reply.data["url"], reply
        query = parse_qs(urlparse(reply.data["url"]).query)
        callback = f"http://127.0.0.1:{query['port'][0]}/auth/callback"
        params = {"state": query["nonce"][0], "uid": f"uid-{name}", "name": name}
        async with (
            aiohttp.ClientSession() as http,
            http.get(callback, params=params) as response,
        ):
            assert response.status == 200, await response.text()

    async def login_all(self, names: list[str], timeout: float = 40) -> None:
        await self.wait_states({n: ChildState.DEGRADED for n in names}, timeout)
        await asyncio.gather(*(self.login(name) for name in names))
        await self.wait_states({n: ChildState.READY for n in names}, timeout)

    async def chat(self, http: aiohttp.ClientSession, text: str) -> tuple[int, dict[str, Any]]:
        body = {"model": "auto", "messages": [{"role": "user", "content": text}]}
        headers = {"Authorization": f"Bearer {API_KEY}", "x-lingma-affinity": text}
        async with http.post(
            f"{self.base_url}/v1/chat/completions", json=body, headers=headers
        ) as response:
            payload: dict[str, Any] = await response.json(content_type=None)
            return response.status, payload

    async def metrics(self, http: aiohttp.ClientSession) -> str:
        headers = {"Authorization": f"Bearer {API_KEY}"}
        async with http.get(f"{self.base_url}/metrics", headers=headers) as response:
            assert response.status == 200, await response.text()
            return await response.text()

    def signal(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)

    def tree(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    async def cli(self, *args: str) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            *LINGMA_GW, *args, "--socket", self.control,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        async with asyncio.timeout(20):
            out, err = await proc.communicate()
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()


def start_gateway(
    children: ChildProcesses,
    root: Path,
    accounts: dict[str, str],
    env: dict[str, str] | None = None,
    *,
    extra: str = "",
) -> SupervisedGateway:
    (root / "rt").mkdir(mode=0o700, exist_ok=True)
    gateway = SupervisedGateway(root=root, port=free_port(), proc=None)  # type: ignore[arg-type]
    gateway.write_config(accounts, extra)
    # The shell only redirects and execs (same pid): the log file is never held open here.
    redirect = 'exec "$0" "$@" >> "$LGW_LOG" 2>&1'
    gateway.proc = children.start(
        ["/bin/sh", "-c", redirect, *LINGMA_GW, "serve", "--config", str(gateway.config_path)],
        env={"LGW_LOG": str(root / "gw.log"), **(env or {})},
    )
    return gateway


def decode_status(text: str) -> StatusReply:
    return msgspec.json.decode(text, type=StatusReply)


async def wait_exit(proc: subprocess.Popen[bytes], timeout: float) -> int:
    async def exited() -> bool:
        return proc.poll() is not None

    await wait_until_async(exited, timeout, f"pid {proc.pid} to exit")
    assert proc.returncode is not None
    return proc.returncode
