"""Runs in the supervisor: spawning fronts and workers (supervisor/child_entry.py starts each).

Fronts and workers start as fresh interpreters under the "spawn" start method, by module name:
the child imports `module` and calls its synchronous `run(spec_bytes)` with the msgpack-encoded
spec. The supervisor never imports worker or front code; each child isolates itself (own
process group, parent-death SIGKILL) inside its `run`. Before that, `child_main` gives the
child its process title (setproctitle), so `ps`, `top` and `systemd-cgls` show
`lingma-gw: worker acct-a` instead of multiprocessing's `python3 -c from multiprocessing...`.

We use aiomultiprocess's `Process` API (start/pid/exitcode/terminate/kill/awaitable join) with
two deliberate departures, both about supervising long-lived children rather than running
coroutines to completion:

* its constructor creates a `multiprocessing.Manager` namespace for each process (a manager
  server process the children connect to). That extra process would outlive a SIGKILLed
  supervisor and serves no purpose for us, so `ChildProcess` builds the spawn-context
  `Process` itself with a plain synchronous target, keeping aiomultiprocess's spawn context;
* its `join` polls `exitcode` every 5 ms; ours waits on a pidfd (Linux >= 5.3) or the
  process sentinel through the event loop, so an idle supervisor does not wake up 200 times a
  second per child. Exit codes are the ones multiprocessing reports: `run` returning is 0,
  `SystemExit(n)` is n (78/77 are reserved), a signal is -signo.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from typing import Any

import aiomultiprocess
import aiomultiprocess.core

from protocol.vocabulary import ChildKind
from supervisor.child_entry import child_main

WORKER_MODULE = "worker.worker"
FRONT_MODULE = "front.process"


TITLE_PREFIX = "lingma-gw: "
SUPERVISOR_TITLE = TITLE_PREFIX + "supervisor"


def process_title(kind: ChildKind, name: str) -> str:
    """`lingma-gw: worker acct-a`, `lingma-gw: front 0`: the role, then which one."""
    return f"{TITLE_PREFIX}{kind.value} {name.removeprefix(kind.value + '-')}"


class ChildProcess(aiomultiprocess.Process):  # type: ignore[misc]
    """One spawned front or worker interpreter."""

    def __init__(self, module: str, spec_bytes: bytes, *, name: str, title: str = "") -> None:
        # Deliberately not calling super().__init__: see the module docstring (no Manager).
        context = aiomultiprocess.core.get_context()
        if context.get_start_method() != "spawn":  # pragma: no cover - a misconfiguration
            raise RuntimeError("children must be started with the spawn start method")
        self.module = module
        # daemon=True: if the supervisor ever exits with a child still alive, multiprocessing's
        # atexit hook terminates it instead of joining it forever.
        self.aio_process = context.Process(
            target=child_main, args=(module, spec_bytes, title), name=name, daemon=True
        )
        self._pidfd: int | None = None

    def start(self) -> None:
        self.aio_process.start()
        with contextlib.suppress(AttributeError, OSError):
            # Opened right away: the child cannot have been reaped yet, so the fd is ours.
            self._pidfd = os.pidfd_open(self.aio_process.pid)

    async def join(self, timeout: float | None = None) -> None:
        """Wait for the exit without polling; returns once `exitcode` is set."""
        if timeout is not None:
            async with asyncio.timeout(timeout):
                await self.join()
            return
        if self.exitcode is not None:
            return
        fd = self._pidfd if self._pidfd is not None else self.aio_process.sentinel
        loop = asyncio.get_running_loop()
        readable = asyncio.Event()
        loop.add_reader(fd, readable.set)
        try:
            while self.exitcode is None:
                await readable.wait()
                # Still a zombie, so its pid (and group id) cannot have been reused: clear out
                # whatever it left in its group before reaping it.
                reap_group(self.aio_process.pid)
                if self.exitcode is None:  # readable but not reapable yet: look again shortly
                    await asyncio.sleep(0.01)
        finally:
            loop.remove_reader(fd)

    def close(self) -> None:
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
        with contextlib.suppress(ValueError):
            self.aio_process.close()

    def signal_group(self, sig: int) -> None:
        """Send `sig` to the child's process group (or to the child before it made one)."""
        pid = self.pid
        if pid is None or self.exitcode is not None:
            return
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            # The child has not called setpgid yet, so there is no group named after it.
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        except PermissionError:  # pragma: no cover - pid reused by someone else's group
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def kill_group(self) -> None:
        self.signal_group(signal.SIGKILL)


def reap_group(pgid: int) -> None:
    """SIGKILL whatever is left in a dead child's process group (nothing, normally)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def describe_exit(code: Any) -> str:
    if code is None:
        return "running"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
        return f"killed by signal {-code}"
    return f"exit code {code}"
