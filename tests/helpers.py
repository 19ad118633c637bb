"""Test-only helpers: deadlines instead of sleeps, free ports, subprocess ownership, orphans."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `predicate` until true or fail with `what` once `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


async def wait_until_async(
    predicate: Callable[[], Awaitable[bool]], timeout: float, what: str
) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.01
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.2)


def descendants(pid: int) -> list[psutil.Process]:
    with contextlib.suppress(psutil.NoSuchProcess):
        return psutil.Process(pid).children(recursive=True)
    return []


def alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def assert_all_gone(procs: Sequence[psutil.Process], timeout: float = 10.0) -> None:
    wait_until(
        lambda: not any(alive(p) for p in procs),
        timeout,
        f"processes to exit: {[p.pid for p in procs if alive(p)]}",
    )


class ChildProcesses:
    """Owns every subprocess a test starts; kills their whole process groups at teardown."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self._tree: list[psutil.Process] = []

    def start(
        self,
        args: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        log_path: Path | None = None,
        cwd: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        full_env = {**os.environ, **(env or {})}
        with contextlib.ExitStack() as stack:
            out = stack.enter_context(open(log_path, "ab")) if log_path else subprocess.DEVNULL
            proc = subprocess.Popen(
                list(args),
                env=full_env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=cwd or REPO,
                start_new_session=True,
            )
        self.procs.append(proc)
        return proc

    def remember_tree(self) -> None:
        """Snapshot the descendants now, so teardown also reaps what they spawned."""
        for proc in self.procs:
            self._tree.extend(descendants(proc.pid))

    def kill_all(self) -> None:
        self.remember_tree()
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        for child in self._tree:
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                child.kill()
