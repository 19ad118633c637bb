"""Runs in the bench: owns every process the bench starts (own process groups), ports, RSS."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
MIB = 1024 * 1024
FD_MARGIN = 256  # descriptors a process needs beside one per open stream (logs, IPC, listeners)


class BenchError(RuntimeError):
    """A scenario could not run; the message says why and is put in the report."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Owned:
    """Every child the bench started; `stop_all` kills each whole process group.

    Children are session leaders (start_new_session), so killing the group also reaches what
    they spawned themselves (fronts, workers, emulators), unless those made their own groups;
    those are found through psutil before the kill and killed one by one.
    """

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(
        self,
        args: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        full_env = {**os.environ, **(env or {})}
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                list(args),
                env=full_env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=cwd or REPO,
                start_new_session=True,
            )
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], grace_s: float = 5.0) -> None:
        self.stop_many([proc], grace_s)

    def stop_many(self, procs: list[subprocess.Popen[bytes]], grace_s: float = 5.0) -> None:
        """TERM every group at once, wait up to `grace_s` in all, then KILL what is left.

        Descendants are noted first: a child that made its own process group (a worker, a
        Lingma binary) is killed by pid and group if it outlived its parent's graceful stop.
        """
        trees = {proc.pid: descendants(proc.pid) for proc in procs}
        for proc in procs:
            _signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        for proc in procs:
            _signal_group(proc.pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
            for child in trees[proc.pid]:
                _kill_member(child)
            if proc in self.procs:
                self.procs.remove(proc)

    def stop_all(self) -> None:
        self.stop_many(list(reversed(self.procs)), grace_s=3.0)


def _kill_member(child: psutil.Process) -> None:
    """KILL a noted descendant (and the group it leads), only if it is still that process."""
    with contextlib.suppress(psutil.Error, ProcessLookupError, PermissionError):
        if not child.is_running():  # psutil compares the start time: no pid-reuse mistakes
            return
        if os.getpgid(child.pid) == child.pid:
            os.killpg(child.pid, signal.SIGKILL)
        child.kill()


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def descendants(pid: int) -> list[psutil.Process]:
    with contextlib.suppress(psutil.Error):
        return psutil.Process(pid).children(recursive=True)
    return []


def rss_bytes(pid: int) -> int:
    with contextlib.suppress(psutil.Error):
        return int(psutil.Process(pid).memory_info().rss)
    return 0


def uss_bytes(pid: int) -> int:
    """Unique set size: memory freed if this process exited (no shared library pages)."""
    with contextlib.suppress(psutil.Error):
        return int(psutil.Process(pid).memory_full_info().uss)
    return 0


def cmdline(proc: psutil.Process) -> list[str]:
    with contextlib.suppress(psutil.Error):
        return proc.cmdline()
    return []


async def wait_port(port: int, timeout_s: float, proc: subprocess.Popen[bytes] | None) -> None:
    """Until 127.0.0.1:port accepts a TCP connection; fail early if `proc` exits."""
    deadline = time.monotonic() + timeout_s
    delay = 0.02
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise BenchError(f"process {proc.args!r} exited with {proc.returncode}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.25)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return
    raise BenchError(f"nothing listened on 127.0.0.1:{port} within {timeout_s:.0f}s")


def tail(path: Path, lines: int = 15) -> str:
    """The end of a child's log, to explain a failure."""
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


def raise_own_fd_limit() -> tuple[int, int]:
    """Soft RLIMIT_NOFILE up to the hard limit, before any child starts: every process the
    bench starts (gateways, their fronts, workers and emulators, LiteLLM, the generator's pool)
    inherits it. Returns (soft, hard) as they are now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft < wanted:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def ensure_fd_limit(pid: int, needed: int) -> int:
    """Raise a running process's soft RLIMIT_NOFILE towards `needed` (within its hard limit,
    as the same user may); returns the soft limit it has now (0 when unknown)."""
    with contextlib.suppress(psutil.Error, OSError, ValueError):
        proc = psutil.Process(pid)
        soft, hard = proc.rlimit(psutil.RLIMIT_NOFILE)
        if soft < needed:
            ceiling = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
            with contextlib.suppress(psutil.Error, OSError, ValueError):
                proc.rlimit(psutil.RLIMIT_NOFILE, (ceiling, hard))
            soft = proc.rlimit(psutil.RLIMIT_NOFILE)[0]
        return int(soft)
    return 0
