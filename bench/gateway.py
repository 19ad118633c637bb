"""Runs in the bench: one lingma-gw under test — its config, start, readiness, pids, stop.

Each instance is the real service (`lingma-gw serve --config FILE`) in front of the emulator,
in its own temporary directory. The account's work dir is pre-seeded with a logged-in
`cache/` (made once by `make_login_cache`), so no browser login is timed or needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from bench.direct import LingmaConnection
from bench.procs import PYTHON, BenchError, Owned, free_port, tail, wait_port
from protocol.control_socket import ControlReply, StatusReply, StatusRequest
from protocol.framing import open_framed
from protocol.vocabulary import ChildState

API_KEY = "sk-bench"
ACCOUNT = "bench"
READY_TIMEOUT_S = 60.0
CHECK_TIMEOUT_S = 30.0
LINGMA_GW = Path(sys.executable).with_name("lingma-gw")


def emulator_command() -> list[str]:
    """The emulator console script installed beside this interpreter, else `-m emulator`."""
    script = Path(sys.executable).with_name("lingma-emulator")
    return [str(script)] if os.access(script, os.X_OK) else [PYTHON, "-m", "emulator"]


def read_ws_url(work_dir: Path) -> str | None:
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        info = json.loads((work_dir / ".info.json").read_text())
        return f"ws://127.0.0.1:{int(info['websocketPort'])}/"
    return None


async def make_login_cache(owned: Owned, root: Path) -> Path:
    """Start an emulator once, log its work dir in (device login), return its `cache/` dir."""
    work_dir = root / "login-template"
    work_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    args = [*emulator_command(), "start", "--workDir", str(work_dir)]
    args += ["--socketPort", str(port), "--httpPort", str(free_port())]
    proc = owned.start(args, log_path=root / "logs" / "login-template.log")
    try:
        await wait_port(port, 30.0, proc)
        async with aiohttp.ClientSession() as session:
            conn = await LingmaConnection.open(session, f"ws://127.0.0.1:{port}/")
            await conn.close()
    finally:
        owned.stop(proc)
    cache = work_dir / "cache"
    if not (cache / "user").is_file():
        raise BenchError(f"the emulator did not write {cache / 'user'} after device login")
    return cache


@dataclass
class GatewaySetup:
    """What differs between the gateways a run needs."""

    name: str
    emulator_env: dict[str, str] = field(default_factory=dict)
    session_reuse: bool = True
    record: bool = False
    backend: str = "runtime"  # "cloud": chat through the emulator's cloud side (issue 17)
    extra_config: str = ""  # TOML appended after the account (keys scenario: [[keys]], [usage])


@dataclass
class GatewayPids:
    supervisor: int
    fronts: list[int]
    workers: list[int]
    binaries: list[int]


class BenchGateway:
    """One running lingma-gw; `url` is its HTTP base."""

    def __init__(self, setup: GatewaySetup, root: Path) -> None:
        self.setup = setup
        self.dir = root / setup.name
        self.runtime_dir = self.dir / "run"
        self.state_dir = self.dir / "state"
        self.work_dir = self.state_dir / "accounts" / ACCOUNT
        self.record_path = self.dir / "record.jsonl" if setup.record else None
        self.log_path = root / "logs" / f"gateway-{setup.name}.log"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        # The cloud backend's upstream is the emulator's HTTP side: its port is pinned (the
        # emulator, like the runtime, takes the last --httpPort it is given), so the gateway's
        # explicit cloud_base_url and the bench's direct client both know where it is.
        self.cloud_url = f"http://127.0.0.1:{free_port()}" if setup.backend == "cloud" else ""

    def _backend_lines(self) -> str:
        if not self.cloud_url:
            return ""  # the default backend: no key, so the config stays valid without issue 17
        port = self.cloud_url.rsplit(":", 1)[1]
        return (
            f'backend = "{self.setup.backend}"\n'
            f"cloud_base_url = {json.dumps(self.cloud_url)}\n"
            f'binary_args = ["--httpPort", "{port}"]\n'
        )

    def write_config(self) -> Path:
        env = dict(self.setup.emulator_env)
        if self.record_path is not None:
            env["LINGMA_EMULATOR_RECORD"] = str(self.record_path)
        env_lines = "\n".join(f"{key} = {json.dumps(value)}" for key, value in env.items())
        text = f"""# written by the bench for one run (gateway {self.setup.name!r})
[server]
listen = "127.0.0.1:{self.port}"
runtime_dir = {json.dumps(str(self.runtime_dir))}
state_dir = {json.dumps(str(self.state_dir))}
log_level = "warning"
access_log = false
progress = "off"
grace_period_s = 2

[auth]
api_keys = ["{API_KEY}"]

[limits]
max_in_flight = 8192
per_worker_max_in_flight = 8192
queue_timeout_s = 30

[lingma]
binary = {json.dumps(emulator_command()[0])}
{self._backend_lines()}
[lingma.env]
{env_lines}

[sessions]
reuse = {"true" if self.setup.session_reuse else "false"}

[browser]
auto_login = false

[[accounts]]
name = "{ACCOUNT}"
max_concurrency = 8192
{self.setup.extra_config}"""
        path = self.dir / "gateway.toml"
        path.write_text(text)
        return path

    async def check_config(self) -> str | None:
        """`lingma-gw check-config` on this gateway's config: None when accepted, else why."""
        self.dir.mkdir(parents=True, exist_ok=True)
        proc = await asyncio.create_subprocess_exec(
            str(LINGMA_GW),
            "check-config",
            "--config",
            str(self.write_config()),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            async with asyncio.timeout(CHECK_TIMEOUT_S):
                out, _ = await proc.communicate()
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return f"check-config took longer than {CHECK_TIMEOUT_S:.0f}s"
        if proc.returncode == 0:
            return None
        return out.decode(errors="replace").strip()[-400:] or f"exit {proc.returncode}"

    async def start(self, owned: Owned, login_cache: Path) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        shutil.copytree(login_cache, self.work_dir / "cache", dirs_exist_ok=True)
        config = self.write_config()
        self.proc = owned.start(
            [str(LINGMA_GW), "serve", "--config", str(config)], log_path=self.log_path
        )
        try:
            await self._wait_ready()
        except (BenchError, TimeoutError) as exc:
            raise BenchError(f"gateway {self.setup.name}: {exc}\n{tail(self.log_path)}") from exc

    async def _wait_ready(self) -> None:
        """Every worker READY, every front running, and /v1/models answering 200."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        await wait_port(self.port, READY_TIMEOUT_S, self.proc)
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if self.proc is not None and self.proc.poll() is not None:
                    raise BenchError(f"lingma-gw exited with {self.proc.returncode}")
                if await self._all_ready() and await self._models_ok(session):
                    return
                await asyncio.sleep(0.1)
        raise BenchError(f"not ready within {READY_TIMEOUT_S:.0f}s")

    async def _all_ready(self) -> bool:
        try:
            status = await self.status()
        except (OSError, TimeoutError, BenchError):
            return False
        workers_ready = all(w.state is ChildState.READY for w in status.workers)
        fronts_up = all(f.pid for f in status.fronts)
        return bool(status.workers) and workers_ready and bool(status.fronts) and fronts_up

    async def _models_ok(self, session: aiohttp.ClientSession) -> bool:
        headers = {"Authorization": f"Bearer {API_KEY}"}
        try:
            async with session.get(f"{self.url}/v1/models", headers=headers) as response:
                return response.status == 200
        except aiohttp.ClientError:
            return False

    async def status(self) -> StatusReply:
        stream = await open_framed(str(self.runtime_dir / "control.sock"), ControlReply)
        try:
            await stream.send(StatusRequest())
            async with asyncio.timeout(5.0):
                reply = await stream.recv()
        finally:
            await stream.close()
        if not isinstance(reply, StatusReply):
            raise BenchError(f"control socket answered {reply!r}")
        return reply

    async def pids(self) -> GatewayPids:
        status = await self.status()
        return GatewayPids(
            supervisor=status.pid,
            fronts=[f.pid for f in status.fronts if f.pid],
            workers=[w.pid for w in status.workers if w.pid],
            binaries=[w.binary_pid for w in status.workers if w.binary_pid],
        )

    def ws_url(self) -> str:
        """The emulator's JSON-RPC WebSocket behind this gateway's worker."""
        url = read_ws_url(self.work_dir)
        if url is None:
            raise BenchError(f"no .info.json in {self.work_dir}")
        return url

    def stop(self, owned: Owned) -> None:
        if self.proc is not None:
            owned.stop(self.proc, grace_s=8.0)
            self.proc = None
