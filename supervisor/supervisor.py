"""Runs in the supervisor: `lingma-gw serve` - the roster of children, the signals, the main loop.

Signal handlers only record the signal and wake the loop; the loop acts on it:
TERM/INT drain (fronts first, then workers) and exit 0, a second INT kills everything at once
(exit 130), HUP reloads the config. The loop also pets the systemd watchdog, says READY=1 once
every front listens, and pushes the worker set to the fronts whenever it changed. The
supervisor owns the config and the roster; the control commands (supervisor/commands.py) and
the reloader (supervisor/reload.py) get the roster and callbacks, never the supervisor itself.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import signal
import time

from protocol.control_socket import ErrorReply, OkReply, StatusReply, StatusRequest
from protocol.framing import FrameError, prepare_socket_dir
from protocol.front_socket import WorkerRef, WorkersUpdate
from protocol.vocabulary import ChildKind, ChildState, ErrorCode
from supervisor.children import ChildFactory
from supervisor.commands import Commands
from supervisor.config import Config
from supervisor.console import Console
from supervisor.control import ControlServer, ControlUnavailable, request
from supervisor.handle import ChildHandle, NotConnected
from supervisor.keyservice import KeyService, KeyStoreError
from supervisor.metrics import MetricsAggregate
from supervisor.reload import Reloader
from supervisor.roster import Roster
from supervisor.systemd import Notifier

log = logging.getLogger(__name__)

S = ChildState
EXIT_FORCED = 130
EXIT_NO_FRONT = 78  # every front exited "cannot start" (e.g. a privileged port): a config issue
TICK_S = 1.0


class AlreadyRunning(RuntimeError):
    """Another supervisor owns this runtime dir: taking over its sockets would orphan it."""


class CannotStart(RuntimeError):
    """The runtime or state directory cannot be created or used (permissions, read-only)."""


async def _answers(control_socket: str) -> bool:
    try:
        reply = await request(control_socket, StatusRequest(), timeout=2.0)
    except ControlUnavailable:
        return False
    return isinstance(reply, StatusReply)


class Supervisor:
    def __init__(
        self,
        config: Config,
        config_path: str,
        environ: dict[str, str],
        notifier: Notifier,
        console: Console,
    ) -> None:
        self.config = config  # replaced as a whole by a reload
        self.config_path = config_path
        self.notifier = notifier
        self.console = console
        self.roster = Roster()
        self.started_at = time.time()
        self.keys = KeyService(
            config, lambda: [h for h in self.all_handles() if h.kind is ChildKind.FRONT]
        )
        self.children = ChildFactory(
            paths_in_use=lambda: {h.socket_path for h in self.all_handles()},
            worker_refs=self.worker_refs,
            claim_key_column=self.keys.claim_column,
            front_keys=self.keys.front_keys,
            on_transition=self._on_transition,
            on_pong=console.on_pong,
        )
        self.metrics = MetricsAggregate(self.roster.serving)
        self.metrics.registry.register(self.keys.metrics)
        self.reloader = Reloader(
            config_path=config_path,
            environ=environ,  # a copy taken before secrets were scrubbed
            roster=self.roster,
            children=self.children,
            retire=self.retire,
            workers_changed=self.mark_workers_changed,
            adopting=self.keys.reconfigure,
            notifier=notifier,
            console=console,
        )
        self.commands = Commands(
            roster=self.roster,
            metrics=self.metrics,
            reload=self.reload_and_push_keys,
            keys=self.keys.handle,
            ledger=lambda: self.keys.ledger,
            settings=lambda: self.config.server,
            started_at=self.started_at,
        )
        self.shutting_down = False
        self._signals: collections.deque[int] = collections.deque()
        self._wakeup = asyncio.Event()
        self._workers_dirty = False
        self._ready_notified = False
        self._exit_code = 0
        self._last_status = ""
        self._background: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ views

    def all_handles(self) -> list[ChildHandle]:
        return [*self.roster.serving(), *self.roster.retiring, *self.reloader.pending()]

    def worker_refs(self) -> list[WorkerRef]:
        return [WorkerRef(name=h.name, socket_path=h.socket_path) for h in self.roster.workers()]

    # ------------------------------------------------------------------ children

    def _on_transition(
        self, handle: ChildHandle, old: ChildState, new: ChildState, reason: str
    ) -> None:
        self.console.on_transition(handle, old, new, reason)
        if new == S.READY:
            self._workers_dirty = True  # a (re)started worker or front: tell the fronts
        self._wakeup.set()

    def reload(self) -> OkReply | ErrorReply:
        if self.shutting_down:
            return ErrorReply(code=ErrorCode.UNAVAILABLE, message="shutting down")
        self.config, reply = self.reloader.reload(self.config)
        return reply

    async def reload_and_push_keys(self) -> OkReply | ErrorReply:
        """`lingma-gw reload`: the new keys work on every front once it returns."""
        reply = self.reload()
        await self.keys.push()
        return reply

    def retire(self, handle: ChildHandle) -> None:
        """Drain a replaced or removed child in the background."""
        self.roster.retiring.append(handle)
        self.spawn_task(self._retire(handle), f"retire-{handle.label}")

    async def _retire(self, handle: ChildHandle) -> None:
        try:
            # Fronts learn the new worker set before the old worker starts refusing chats.
            await self.broadcast_workers()
            await handle.stop(self.config.server.grace_period_s, handover=True)
        finally:
            self.keys.release_column(handle.socket_path)
            with contextlib.suppress(ValueError):
                self.roster.retiring.remove(handle)

    def spawn_task(self, coro: collections.abc.Coroutine[object, object, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def mark_workers_changed(self) -> None:
        self._workers_dirty = True
        self._wakeup.set()

    # ------------------------------------------------------------------ main

    async def serve(self) -> int:
        server = self.config.server
        control = ControlServer(self.config.control_socket, self.commands.handle)
        try:
            prepare_socket_dir(server.runtime_dir)
            os.makedirs(os.path.join(server.state_dir, "accounts"), mode=0o700, exist_ok=True)
            if await _answers(self.config.control_socket):
                raise AlreadyRunning(
                    f"another lingma-gw answers on {self.config.control_socket}: "
                    "stop it or use another runtime_dir"
                )
            await self.keys.open()
            await control.start()
        except OSError as exc:
            await self.keys.close()
            raise CannotStart(
                f"cannot prepare {server.runtime_dir} / {server.state_dir}: {exc}"
            ) from exc
        except KeyStoreError as exc:
            await self.keys.close()
            raise CannotStart(str(exc)) from None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(sig, self._record_signal, sig)
        self.notifier.status("starting workers and fronts")
        try:
            for account in self.config.accounts:
                self.roster.add(self.children.worker(self.config, account))
            for index in range(server.fronts):
                self.roster.add(self.children.front(self.config, index))
            for handle in self.roster.serving():
                handle.start()
            self.spawn_task(self._poll_stats(), "poll-stats")
            return await self._main_loop()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            for handle in self.all_handles():  # only reached with children alive on a crash
                handle.force_kill()
            for task in list(self._background):
                task.cancel()
            await self.keys.close()  # after the fronts' last rows arrived: commit them
            await control.close()
            self.notifier.close()

    def _record_signal(self, sig: int) -> None:
        self._signals.append(sig)
        self._wakeup.set()

    async def _main_loop(self) -> int:
        shutdown: asyncio.Task[int] | None = None
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(TICK_S):
                    await self._wakeup.wait()
            self._wakeup.clear()
            while self._signals:
                sig = self._signals.popleft()
                if sig == signal.SIGHUP and shutdown is None:
                    log.info("SIGHUP: reloading %s", self.config_path)
                    log.info("reload: %s", self.reload().message)
                elif shutdown is None and sig in (signal.SIGTERM, signal.SIGINT):
                    log.info("%s: draining", signal.Signals(sig).name)
                    shutdown = asyncio.create_task(self._shutdown())
                    shutdown.add_done_callback(lambda _: self._wakeup.set())
                elif sig == signal.SIGINT:
                    log.warning("second SIGINT: killing every child now")
                    self._exit_code = EXIT_FORCED
                    for handle in self.all_handles():
                        handle.force_kill()
            if shutdown is not None and shutdown.done():
                return shutdown.result()
            fronts = self.roster.fronts()
            if shutdown is None and fronts and all(h.state == S.FATAL for h in fronts):
                log.error("no front can listen on %s: stopping", self.config.server.listen)
                self._exit_code = EXIT_NO_FRONT
                shutdown = asyncio.create_task(self._shutdown())
                shutdown.add_done_callback(lambda _: self._wakeup.set())
            self._tick()

    def _tick(self) -> None:
        self.notifier.watchdog()
        if self.shutting_down:
            return
        if self._workers_dirty:
            self._workers_dirty = False
            self.spawn_task(self.broadcast_workers(), "workers-update")
        workers = self.roster.workers()
        fronts_ready = all(h.state == S.READY for h in self.roster.fronts())
        ready = sum(1 for h in workers if h.state == S.READY)
        status = f"{ready}/{len(workers)} accounts ready, listening on {self.config.server.listen}"
        if fronts_ready and not self._ready_notified:
            self._ready_notified = True
            self.notifier.ready(status)
            self._last_status = status
        elif status != self._last_status and self._ready_notified:
            self.notifier.status(status)
            self._last_status = status
        self.console.maybe_banner(self.config, workers, self.config.control_socket)

    async def broadcast_workers(self) -> None:
        refs = self.worker_refs()
        await asyncio.gather(*(self._send_workers(f, refs) for f in self.roster.fronts()))
        await self.keys.push()  # a front that just got READY may have missed a key change

    @staticmethod
    async def _send_workers(front: ChildHandle, refs: list[WorkerRef]) -> None:
        with contextlib.suppress(NotConnected, FrameError, OSError, TimeoutError):
            await front.call(lambda i: WorkersUpdate(id=i, workers=refs), timeout=2.0)

    async def _poll_stats(self) -> None:
        interval = self.config.server.stats_interval_s
        while True:
            await asyncio.sleep(interval)
            await self.metrics.refresh(max_age_s=interval / 2)

    async def _shutdown(self) -> int:
        """Drain: fronts first (they finish in-flight requests), then workers; no orphans."""
        self.shutting_down = True
        self.notifier.stopping("draining")
        self.console.line("draining (Ctrl-C again to stop at once)")
        await self.reloader.cancel()
        grace = self.config.server.grace_period_s
        fronts = [h for h in self.all_handles() if h.kind is ChildKind.FRONT]
        await asyncio.gather(*(h.stop(grace) for h in fronts))
        workers = [h for h in self.all_handles() if h.kind is ChildKind.WORKER]
        await asyncio.gather(*(h.stop(grace) for h in workers))
        self.console.line("stopped")
        return self._exit_code
