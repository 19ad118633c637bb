"""Runs in the worker: the Lingma binary child — spawn, readiness, watch, restart, stop.

The binary runs `start --workDir D --socketPort P --httpPort H` in its own process group with
a parent-death signal (protocol.lifecycle.isolate_child), so neither a stopped nor a SIGKILLed
worker leaves it behind. It only starts once this worker holds the work dir's lock
(worker/workdir_lock.py, §7.5), which it inherits. Ready means: the discovery file of this run
exists and `initialize` is answered (lingma-protocol.md §7.5, §11.1). When it dies, the keeper
reports it down, waits with the shared backoff policy (protocol/backoff.py) and starts it
again, for as long as the worker lives.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from protocol.backoff import Backoff
from protocol.lifecycle import isolate_child
from protocol.specs import WorkerSpec
from protocol.vocabulary import BinaryState
from worker.discovery import read_discovery, remove_discovery
from worker.rpc import RpcClosed, RpcError
from worker.runtime_client import RuntimeClient
from worker.workdir_lock import WorkDirBusy, WorkDirLock

log = logging.getLogger(__name__)

POLL_S = 0.1
MIN_WORK_DIR_WAIT_S = 60.0  # a draining predecessor may take its grace period to let go


class StartupFailed(RuntimeError):
    pass


def work_dir_wait_s(spec: WorkerSpec) -> float:
    """How long a new binary waits for the previous one on its work dir (then backs off)."""
    return max(MIN_WORK_DIR_WAIT_S, 2 * spec.startup_timeout_s)


def free_port() -> int:
    """A port free right now: every binary start gets its own, so a reload's replacement never
    collides with the binary it replaces."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def binary_usable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


class LingmaBinary:
    """One run of the binary: a process plus the ports it was told to use."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self.work_dir = Path(spec.work_dir)
        self.socket_port = free_port()
        self.http_port = free_port()
        self.process: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def spawn(self, lock_fd: int | None = None) -> None:
        """Start it; `lock_fd` (the work dir's lock) is inherited so it outlives us if need be."""
        remove_discovery(self.work_dir)
        log_dir = self.work_dir / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        args = [
            "start",
            "--workDir",
            str(self.work_dir),
            "--socketPort",
            str(self.socket_port),
            "--httpPort",
            str(self.http_port),
            *self.spec.binary_args,
        ]
        with (log_dir / "lingma-gw-binary.out").open("ab") as out:
            self.process = await asyncio.create_subprocess_exec(
                self.spec.binary,
                *args,
                env={**os.environ, **self.spec.binary_env},
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                cwd=str(self.work_dir),
                preexec_fn=functools.partial(isolate_child, os.getpid()),
                pass_fds=(lock_fd,) if lock_fd is not None else (),
            )
        log.info(
            "binary started",
            extra={"binary_pid": self.process.pid, "socket_port": self.socket_port},
        )

    async def wait_ready(self, client: RuntimeClient, timeout: float) -> None:
        """Poll discovery (else the port we chose) until `initialize` answers."""
        deadline = time.monotonic() + timeout
        last_error = "no discovery file yet"
        while True:
            if not self.running:
                code = self.process.returncode if self.process else None
                raise StartupFailed(f"binary exited with {code} during startup")
            endpoint = read_discovery(self.work_dir)
            port = endpoint.port if endpoint is not None else self.socket_port
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise StartupFailed(f"not ready after {timeout:.0f}s: {last_error}")
            if endpoint is not None or remaining < timeout / 2:
                try:
                    await client.connect(port, min(remaining, 5.0))
                except (RpcClosed, RpcError, TimeoutError) as exc:
                    last_error = f"port {port}: {exc}"
                else:
                    return
            await asyncio.sleep(POLL_S)

    async def stop(self, grace: float) -> int | None:
        """TERM the process group, KILL it after `grace` seconds; returns the exit code."""
        process = self.process
        if process is None:
            return None
        if process.returncode is None:
            _signal_group(process.pid, signal.SIGTERM)
            try:
                async with asyncio.timeout(grace):
                    await process.wait()
            except TimeoutError:
                log.warning("binary ignored SIGTERM, killing it", extra={"binary_pid": process.pid})
        # KILL the group even after a clean exit: helpers it started must not outlive it.
        _signal_group(process.pid, signal.SIGKILL)
        return await process.wait()


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


OnUp = Callable[[RuntimeClient], Awaitable[None]]
OnDown = Callable[[str], Awaitable[None]]


class BinaryKeeper:
    """Keeps one binary running for the worker's lifetime: start, watch, back off, restart."""

    def __init__(
        self, spec: WorkerSpec, *, on_up: OnUp, on_down: OnDown, backoff: Backoff | None = None
    ) -> None:
        self.spec = spec
        self.state = BinaryState.STOPPED
        self.generation = 0
        self.binary: LingmaBinary | None = None
        self.client: RuntimeClient | None = None
        self.lock = WorkDirLock(spec.work_dir)
        self._backoff = backoff or Backoff()
        self._on_up = on_up
        self._on_down = on_down
        self._up_since: float | None = None
        self._stopping = asyncio.Event()

    @property
    def pid(self) -> int | None:
        return self.binary.pid if self.binary is not None and self.binary.running else None

    async def run(self) -> None:
        try:
            while not self._stopping.is_set():
                self._up_since = None
                reason = await self._run_once()
                if self._stopping.is_set():
                    break
                log.warning("binary down: %s", reason, extra={"generation": self.generation})
                await self._on_down(reason)
                self.state = BinaryState.BACKOFF
                healthy_s = time.monotonic() - self._up_since if self._up_since else 0.0
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._backoff.next_delay(healthy_s)):
                        await self._stopping.wait()
        finally:
            self.lock.release()

    async def _run_once(self) -> str:
        """Start one binary and return why it is no longer usable."""
        self.generation += 1
        binary = self.binary = LingmaBinary(self.spec)
        client = RuntimeClient(
            binary.work_dir,
            rpc_timeout=self.spec.rpc_timeout_s,
            max_idle=max(1, self.spec.max_concurrency),
            shared=self.spec.acp_connections,
        )
        try:
            await self._hold_work_dir()
            self.state = BinaryState.STARTING
            await binary.spawn(self.lock.fd)
            await binary.wait_ready(client, self.spec.startup_timeout_s)
            self.client = client
            self.state = BinaryState.UP
            self._up_since = time.monotonic()
            await self._on_up(client)
        except (StartupFailed, WorkDirBusy, OSError) as exc:
            return str(exc)
        else:
            assert binary.process is not None
            return f"binary exited with {await binary.process.wait()}"
        finally:
            self.client = None
            await client.close()
            await binary.stop(grace=2.0)

    async def _hold_work_dir(self) -> None:
        if self.lock.held:
            return
        self.state = BinaryState.WAITING_FOR_WORK_DIR
        await self.lock.acquire(work_dir_wait_s(self.spec))

    async def stop(self, grace: float = 5.0) -> None:
        self.state = BinaryState.STOPPING
        self._stopping.set()
        if self.binary is not None:
            await self.binary.stop(grace)
        self.lock.release()
        self.state = BinaryState.STOPPED
