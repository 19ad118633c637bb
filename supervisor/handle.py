"""Runs in the supervisor: one child (front or worker) - its state machine, spawn, health, restart.

Every state change goes through `_set_state`, which checks the allowed-from edges (an illegal
transition is a bug and raises), writes one log line and counts one metric sample. A handle
runs one task for its whole life: spawn -> watch (exit or failed Ping) -> back off -> spawn.
Liveness is "answers Ping within ping_timeout_s"; readiness is what the child's Pong says.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec
import psutil

from protocol.backoff import Backoff
from protocol.channel import MuxClient
from protocol.child_socket import Drain, Ping, Pong, Stats
from protocol.framing import FrameError
from protocol.vocabulary import RESERVED_EXIT_CODES, ChildKind, ChildState
from supervisor.procfacts import kill_leftovers, snapshot_descendants
from supervisor.spawn import ChildProcess, describe_exit, process_title

log = logging.getLogger(__name__)

S = ChildState
ALLOWED_FROM: dict[ChildState, frozenset[ChildState]] = {
    S.STARTING: frozenset({S.EXITED, S.BACKOFF, S.FATAL}),
    S.READY: frozenset({S.STARTING, S.DEGRADED}),
    S.DEGRADED: frozenset({S.STARTING, S.READY}),
    S.BACKOFF: frozenset({S.STARTING, S.READY, S.DEGRADED}),
    S.STOPPING: frozenset({S.STARTING, S.READY, S.DEGRADED, S.BACKOFF, S.FATAL}),
    S.EXITED: frozenset({S.STOPPING}),
    S.FATAL: frozenset({S.STARTING, S.READY, S.DEGRADED}),
}
RUNNING_STATES = frozenset({S.STARTING, S.READY, S.DEGRADED})
DESCENDANT_SNAPSHOT_EVERY_S = 5.0


class IllegalTransition(RuntimeError):
    pass


class Intent(enum.Enum):
    """What the supervisor wants of the child, beside where it is (the state): the handle's
    task reads it at every step, so a stop or restart request is never lost between two."""

    SUPERVISE = "supervise"  # keep it running: restart with backoff after a crash
    RESTART = "restart"  # an operator asked for a fresh process now, without backoff
    STOP = "stop"  # stopping for good (shutdown, retired): never restarted again


class NotConnected(ConnectionError):
    """The child has no live IPC connection right now (starting, backing off, gone)."""


@dataclass(frozen=True)
class Timings:
    """How a child is watched: the pings come from the config, the rest are fixed policy."""

    ping_interval_s: float
    ping_timeout_s: float
    boot_timeout_s: float = 30.0  # spawn -> first accepted connection on its socket
    term_timeout_s: float = 5.0  # SIGTERM -> SIGKILL


TransitionHook = Callable[["ChildHandle", ChildState, ChildState, str], None]
PongHook = Callable[["ChildHandle", Pong], None]


class ChildHandle:
    def __init__(
        self,
        *,
        kind: ChildKind,
        name: str,
        module: str,
        socket_path: str,
        make_spec: Callable[[], msgspec.Struct],
        incoming: Any,
        template: msgspec.Struct | None = None,
        timings: Timings,
        on_transition: TransitionHook | None = None,
        on_pong: PongHook | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self.kind = kind
        self.name = name
        self.module = module
        self.socket_path = socket_path
        self.timings = timings
        self.backoff = backoff or Backoff()
        self._make_spec = make_spec
        # The settings this child runs with (socket path and worker list aside): reload
        # compares it with the new config's to decide whether the child must be replaced.
        self.template = template
        self._incoming = incoming
        self._on_transition = on_transition
        self._on_pong = on_pong
        self.state = S.EXITED
        self.generation = 0
        self.restarts = 0
        self.transitions: Counter[tuple[str, str]] = Counter()
        self.started_at = 0.0  # wall clock of the current generation's spawn
        self.alive_since: float | None = None  # monotonic time of the first Pong
        self.last_exit = ""
        self.last_pong: Pong | None = None
        self.last_stats: Stats | None = None
        self.stats_at = 0.0
        self.process: ChildProcess | None = None
        self.client: MuxClient | None = None
        self._exited: asyncio.Task[None] | None = None
        self._descendants: list[psutil.Process] = []
        self._task: asyncio.Task[None] | None = None
        self._restart_task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._intent = Intent.SUPERVISE
        self._state_changed = asyncio.Event()

    @property
    def label(self) -> str:
        return f"worker-{self.name}" if self.kind is ChildKind.WORKER else self.name

    def _wants(self, intent: Intent) -> bool:
        # A call, not `self._intent is ...`: the type checker would keep a narrowed attribute
        # across an await, and the intent can change at every await.
        return self._intent is intent

    @property
    def pid(self) -> int | None:
        proc = self.process
        return proc.pid if proc is not None and proc.exitcode is None else None

    # ------------------------------------------------------------------ state machine

    def _set_state(self, new: ChildState, reason: str = "") -> None:
        old = self.state
        if new == old:
            return
        if old not in ALLOWED_FROM[new]:
            raise IllegalTransition(f"{self.label}: {old} -> {new} is not allowed ({reason})")
        self.state = new
        self.transitions[(old.value, new.value)] += 1
        self._state_changed.set()
        self._state_changed = asyncio.Event()
        log.info(
            "%s %s -> %s%s",
            self.label,
            old.value,
            new.value,
            f" ({reason})" if reason else "",
            extra={"child": self.label, "from_state": old.value, "to_state": new.value},
        )
        if self._on_transition is not None:
            self._on_transition(self, old, new, reason)

    # ------------------------------------------------------------------ commands

    def start(self) -> asyncio.Task[None]:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"handle-{self.label}")
            self._task.add_done_callback(self._log_crash)
        return self._task

    def _log_crash(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("%s: supervision task failed", self.label, exc_info=task.exception())

    def request_restart(self, grace_s: float) -> bool:
        """Operator restart: a fresh process now (no backoff). False once stopping."""
        if self._wants(Intent.STOP):
            return False
        self._intent = Intent.RESTART
        self.backoff.reset()
        if self.state in RUNNING_STATES and self.process is not None:
            self._set_state(S.STOPPING, "restart requested")
            self._restart_task = asyncio.create_task(
                self._terminate(grace_s), name=f"restart-{self.label}"
            )
        self._wake.set()
        return True

    async def wait_for_state(self, states: frozenset[ChildState], timeout: float) -> bool:
        """True once the handle is in one of `states`, False after `timeout` seconds."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while self.state not in states:
                    await self._state_changed.wait()
                return True
        return False

    async def stop(self, grace_s: float, *, handover: bool = False) -> None:
        """Drain, then TERM, then KILL by process group; returns once the child is gone.

        `handover`: a replacement already serves, so the child hands its clients over
        (see `Drain.handover`) rather than refusing them as at shutdown.
        """
        if self._task is None or self._task.done():
            return
        self._intent = Intent.STOP
        self._wake.set()
        if self.state != S.EXITED:  # EXITED here: the task has not spawned anything yet
            self._set_state(S.STOPPING, "stop requested")
        await self._terminate(grace_s, handover)
        await self._task
        if self.state != S.EXITED:
            self._set_state(S.EXITED, self.last_exit or "stopped")

    def force_kill(self) -> None:
        self._intent = Intent.STOP
        self._wake.set()
        if self.process is not None:
            self.process.kill_group()

    async def call(self, make: Callable[[int], Any], timeout: float) -> Any:
        client = self.client
        if client is None or not client.connected:
            raise NotConnected(f"{self.label} is not connected ({self.state.value})")
        return await client.call(make, timeout)

    # ------------------------------------------------------------------ life cycle

    async def _run(self) -> None:
        while not self._wants(Intent.STOP):
            code = await self._run_once()
            if self._wants(Intent.STOP):
                break
            if self._wants(Intent.RESTART):
                self._intent = Intent.SUPERVISE
                if self.state == S.STOPPING:
                    self._set_state(S.EXITED, "restarting on request")
                continue
            if code in RESERVED_EXIT_CODES:
                self._set_state(S.FATAL, f"{describe_exit(code)}: restarting will not help")
                await self._sleep_until_woken(None)
            else:
                healthy_for = (
                    0.0 if self.alive_since is None else time.monotonic() - self.alive_since
                )
                delay = self.backoff.next_delay(healthy_for)
                self._set_state(S.BACKOFF, f"{self.last_exit}; next start in {delay:.1f}s")
                await self._sleep_until_woken(delay)
            if self._wants(Intent.RESTART):  # asked for while backing off: that wait is over
                self._intent = Intent.SUPERVISE

    async def _sleep_until_woken(self, timeout: float | None) -> None:
        self._wake.clear()
        if not self._wants(Intent.SUPERVISE):
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._wake.wait()

    async def _run_once(self) -> int | None:
        self.generation += 1
        if self.generation > 1:
            self.restarts += 1
        self._set_state(S.STARTING, f"generation {self.generation}")
        self.alive_since = None
        self.last_pong = None
        proc = ChildProcess(
            self.module,
            msgspec.msgpack.encode(self._make_spec()),
            name=self.label,
            title=process_title(self.kind, self.name),
        )
        try:
            proc.start()
        except OSError as exc:  # fork/exec failure (EAGAIN, ENOMEM): back off and retry
            self.last_exit = f"spawn failed: {exc}"
            return None
        self.process, self.started_at = proc, time.time()
        self._exited = exited = asyncio.create_task(proc.join())
        health = asyncio.create_task(self._health(proc))
        try:
            await asyncio.wait({exited, health}, return_when=asyncio.FIRST_COMPLETED)
            if not exited.done() and self._wants(Intent.SUPERVISE):
                proc.kill_group()  # the health check gave up on a live but unresponsive child
            await exited
        finally:
            health.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await health
            if not exited.done():  # we are being cancelled: never leave a child behind
                proc.kill_group()
            await self._close_client()
        kill_leftovers(self._descendants)
        code: int | None = proc.exitcode
        self.last_exit = describe_exit(code)
        proc.close()
        self.process = None
        return code

    async def _terminate(self, grace_s: float, handover: bool = False) -> None:
        proc, exited = self.process, self._exited
        if proc is None or exited is None or exited.done():
            return
        self._descendants = snapshot_descendants(proc.pid)
        try:
            await self.call(lambda i: Drain(id=i, grace_s=grace_s, handover=handover), timeout=1.0)
        except (NotConnected, FrameError, OSError, TimeoutError):
            proc.signal_group(signal.SIGTERM)  # no IPC yet: TERM is the child's drain signal
        else:
            # Hang up first, so the draining child sees a clean EOF instead of having to
            # cancel our connection when it shuts its socket server down.
            await self._close_client()
        for sig, wait_s in (
            (signal.SIGTERM, grace_s + 1.0),
            (signal.SIGKILL, self.timings.term_timeout_s),
            (None, 5.0),
        ):
            await asyncio.wait({exited}, timeout=wait_s)
            if exited.done() or sig is None:
                return
            log.warning("%s did not exit in %.1fs: sending %s", self.label, wait_s, sig.name)
            proc.signal_group(sig)

    # ------------------------------------------------------------------ health

    async def _health(self, proc: ChildProcess) -> None:
        """Returns when the child should be killed (or when we are stopping)."""
        client = self.client = MuxClient(self.socket_path, incoming=self._incoming)
        timings = self.timings
        if not await self._connect(client, timings.boot_timeout_s):
            log.warning("%s: no socket after %.0fs", self.label, timings.boot_timeout_s)
            return
        snapshot_at = 0.0
        while self._wants(Intent.SUPERVISE):
            try:
                reply = await client.call(
                    lambda i: Ping(id=i, sent_at=time.time()), timeout=timings.ping_timeout_s
                )
            except TimeoutError:
                log.warning("%s: no pong within %.1fs", self.label, timings.ping_timeout_s)
                return
            except (FrameError, OSError):
                if not await self._connect(client, timings.ping_timeout_s):
                    log.warning("%s: lost its socket", self.label)
                    return
                continue
            if isinstance(reply, Pong):
                self._apply_pong(reply)
            if time.monotonic() - snapshot_at > DESCENDANT_SNAPSHOT_EVERY_S:
                snapshot_at = time.monotonic()
                self._descendants = snapshot_descendants(proc.pid)
            await asyncio.sleep(timings.ping_interval_s)

    async def _connect(self, client: MuxClient, within_s: float) -> bool:
        deadline = time.monotonic() + within_s
        delay = 0.02
        while self._wants(Intent.SUPERVISE):
            try:
                await client.connect(timeout=1.0)
            except (OSError, TimeoutError):
                if time.monotonic() > deadline:
                    return False
            else:
                return True
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.25)
        return False

    def _apply_pong(self, pong: Pong) -> None:
        if not self._wants(Intent.SUPERVISE) or self.state not in RUNNING_STATES:
            return
        if self.alive_since is None:
            self.alive_since = time.monotonic()
        self.last_pong = pong
        if self._on_pong is not None:
            self._on_pong(self, pong)
        if pong.state in (S.READY, S.DEGRADED):
            self._set_state(pong.state, f"login {pong.login.value}")
        elif pong.state == S.STARTING and self.state != S.STARTING:
            self._set_state(S.DEGRADED, "child reports starting")

    async def _close_client(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            await client.close()

    def record_stats(self, stats: Stats) -> None:
        self.last_stats = stats
        self.stats_at = time.monotonic()
