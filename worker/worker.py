"""Runs in the worker process: one Lingma account — its binary, login, models and chats.

`serve(spec)` owns everything for the process lifetime and returns its exit code; `run` is the
spawn entry point (msgpack spec bytes). The worker's state is derived, never stored:
STARTING until the binary came up (or failed to) and the login was checked; READY when the
binary is up, logged in and not cooling down after an upstream 429; DEGRADED otherwise;
STOPPING once draining. Signals only record a stop request; the main task acts on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import uvloop

from protocol.chat import ChatEvent, ChatRequest, Failure
from protocol.child_socket import ChildStats, Drain, Ok, Ping, Pong, Stats, StatsQuery
from protocol.framing import start_unix_server
from protocol.lifecycle import isolate_child
from protocol.logs import configure_logging
from protocol.specs import WorkerSpec
from protocol.vocabulary import EXIT_CANNOT_START, Backend, ChildState, ErrorCode, LoginState
from protocol.worker_socket import (
    ClearCooldown,
    LoginBundle,
    LoginBundleQuery,
    LoginStart,
    LoginStatusQuery,
    ModelInfo,
    Models,
    ModelsQuery,
    ModelsRaw,
    ModelsRawQuery,
    WorkerReply,
)
from worker import bundles
from worker.account import Account
from worker.binary import binary_usable
from worker.chat import ChatPath, ChatRunner
from worker.ipc import IpcConnection
from worker.login import import_bundle
from worker.metrics import WorkerMetrics
from worker.reaper import SessionReaper
from worker.runtime_client import RuntimeClient
from worker.runtime_path import RuntimePath
from worker.sessions import SessionCache, SessionEntry

if TYPE_CHECKING:
    from worker.cloud.backend import CloudBackend

log = logging.getLogger(__name__)

DEFAULT_GRACE_S = 10.0
MAX_SOCKET_PATH = 107


class Worker:
    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self.started_at = time.time()
        self.metrics = WorkerMetrics()
        self.reaper = SessionReaper(
            self._runtime, timeout_s=spec.rpc_timeout_s, on_outcome=self.metrics.session_deleted
        )
        self.sessions = SessionCache(
            max_entries=spec.session_cache_max_entries if spec.session_reuse else 0,
            ttl_s=spec.session_cache_ttl_s,
            on_discard=self._discard_entry,
        )
        self.account = Account(spec, metrics=self.metrics, sessions=self.sessions)
        self.cloud = self._cloud_backend() if spec.backend is Backend.CLOUD else None
        path: ChatPath[Any] = self.cloud.path if self.cloud is not None else self._runtime_path()
        self.chats = ChatRunner(
            spec, path, metrics=self.metrics, on_rate_limited=self.account.cool_down
        )
        self.draining = False
        self.exit_code = 0
        self.grace_s = DEFAULT_GRACE_S
        self._stop = asyncio.Event()
        self._chat_tasks: set[asyncio.Task[None]] = set()
        self._connections: set[asyncio.Task[Any]] = set()

    def _cloud_backend(self) -> CloudBackend:
        """The chat path of a `backend = "cloud"` account (worker/cloud/). Imported here: the
        cloud modules (and `cryptography`) cost a runtime account's idle worker about 11 MiB."""
        from worker.cloud.backend import CloudBackend  # noqa: PLC0415

        return CloudBackend(self.spec, runtime=self.account)

    # ----------------------------------------------------------------- state

    @property
    def state(self) -> ChildState:
        if self.draining:
            return ChildState.STOPPING
        if not self.account.settled:
            return ChildState.STARTING
        cloud_ready = self.cloud is None or self.cloud.ready
        return ChildState.READY if self.account.usable and cloud_ready else ChildState.DEGRADED

    def pong(self, request: Ping) -> Pong:
        account = self.account
        return Pong(
            id=request.id,
            sent_at=request.sent_at,
            name=self.spec.name,
            state=self.state,
            login=account.login.state,
            login_attempt=account.login.attempt if account.login.running else 0,
            pid=os.getpid(),
            binary_pid=account.keeper.pid,
            started_at=self.started_at,
            cooldown_until=account.cooldown_until if account.cooling_down else 0.0,
            models=len(self._models()),
            stats=self._stats(),
            binary=account.keeper.state,
            backend=self.spec.backend,
            note=self.cloud.note if self.cloud is not None else "",
        )

    def _models(self) -> list[ModelInfo]:
        """The cloud's own list for a cloud account once it loaded, else the runtime's."""
        if self.cloud is not None and self.cloud.models:
            return self.cloud.models
        return self.account.resolver.models

    def _stats(self) -> ChildStats:
        slots = self.chats.slots
        return self.metrics.stats(
            in_flight=slots.in_flight, queued=slots.queued, sessions=len(self.sessions)
        )

    def _runtime(self) -> tuple[RuntimeClient | None, int]:
        return self.account.client, self.account.keeper.generation

    def _runtime_path(self) -> RuntimePath:
        return RuntimePath(
            self.spec,
            runtime=self._runtime,
            sessions=self.sessions,
            metrics=self.metrics,
            resolver=self.account.resolver,
            on_not_logged_in=self.account.chat_found_logged_out,
            on_discard=self.reaper.discard,
        )

    def _discard_entry(self, entry: SessionEntry) -> None:
        self.reaper.discard(entry.session_id, entry.generation)

    # ----------------------------------------------------------------- lifecycle

    def _prepare_dirs(self) -> None:
        Path(self.spec.work_dir).mkdir(parents=True, exist_ok=True, mode=0o700)
        Path(self.spec.socket_path).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        import_bundle(self.spec)  # before the binary starts, so it finds the login on disk

    async def run(self) -> int:
        self._prepare_dirs()
        try:
            server = await start_unix_server(self.spec.socket_path, self._on_connection)
        except OSError as exc:
            problem = str(exc)
        else:
            return await self._serve(server)
        log.error("cannot listen on %s: %s", self.spec.socket_path, problem)
        return EXIT_CANNOT_START

    async def _serve(self, server: asyncio.Server) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop, DEFAULT_GRACE_S)
        account = asyncio.create_task(self.account.run(), name="account")
        if self.cloud is not None:
            self.cloud.start()
        self.reaper.start()
        log.info("worker serving", extra={"socket": self.spec.socket_path})
        await self._stop.wait()
        await self._drain()  # chats finish while the binary still runs
        await self.reaper.stop()  # what is still queued stays with the runtime
        if self.cloud is not None:
            await self.cloud.stop()
        await self.account.stop()
        account.cancel()
        await asyncio.gather(account, return_exceptions=True)
        server.close()
        for connection in list(self._connections):
            connection.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.spec.socket_path)
        log.info("worker stopped", extra={"exit_code": self.exit_code})
        return self.exit_code

    def request_stop(self, grace_s: float = DEFAULT_GRACE_S, exit_code: int = 0) -> None:
        """Record a stop (signal handler, Drain, unusable account); `run` does the work."""
        if not self._stop.is_set():
            self.grace_s = grace_s
            self.exit_code = exit_code
            self._stop.set()

    async def _drain(self) -> None:
        self.draining = True
        pending = set(self._chat_tasks)
        if pending:
            log.info("draining %d chat(s) for up to %.1fs", len(pending), self.grace_s)
            _done, pending = await asyncio.wait(pending, timeout=self.grace_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            await IpcConnection(self, reader, writer).serve()
        finally:
            self._connections.discard(task)

    # ----------------------------------------------------------------- requests

    def start_chat(self, request: ChatRequest, emit: Any) -> asyncio.Task[None] | None:
        refusal = self._chat_refusal(request)
        if refusal is not None:
            emit(refusal)
            return None
        task = asyncio.create_task(self.chats.run(request, emit))
        self._chat_tasks.add(task)
        task.add_done_callback(self._chat_tasks.discard)
        return task

    def _chat_refusal(self, request: ChatRequest) -> ChatEvent | None:
        def failure(code: ErrorCode, message: str, retry_after: float | None = None) -> Failure:
            return self.chats.failure(request, code, message, retry_after)

        account = self.account
        if self.draining:
            return failure(ErrorCode.UNAVAILABLE, "worker is draining", 1.0)
        if account.client is None:
            return failure(ErrorCode.UNAVAILABLE, "Lingma runtime is not up yet", 1.0)
        if not account.logged_in:
            doing = "logging in" if account.login.running else "not logged in"
            return failure(ErrorCode.NOT_LOGGED_IN, f"account {self.spec.name} is {doing}")
        if account.cooling_down:
            remaining = round(account.cooldown_until - time.time(), 1)
            return failure(ErrorCode.UPSTREAM_RATE_LIMITED, "account is cooling down", remaining)
        cloud_problem = self.cloud.refusal() if self.cloud is not None else None
        if cloud_problem is not None:  # another account may be ready: the front tries it
            return self.chats.failure(
                request, ErrorCode.NOT_LOGGED_IN, cloud_problem, retryable=True
            )
        return None

    async def answer(self, request: Any) -> WorkerReply:
        handler = self._queries.get(type(request))
        if handler is None:
            name = type(request).__name__
            message = f"{name} is not served by a worker"
            return Failure(id=request.id, code=ErrorCode.UNSUPPORTED, message=message)
        return await handler(request)

    @property
    def _queries(self) -> dict[type, Callable[[Any], Awaitable[WorkerReply]]]:
        return {
            StatsQuery: self._stats_reply,
            ModelsQuery: self._models_reply,
            ModelsRawQuery: self._models_raw_reply,
            LoginStart: self._login_start,
            LoginStatusQuery: self._login_status,
            LoginBundleQuery: self._export,
            ClearCooldown: self._clear_cooldown,
            Drain: self._drain_request,
        }

    async def _stats_reply(self, request: StatsQuery) -> WorkerReply:
        families = self.metrics.families()
        return Stats(id=request.id, name=self.spec.name, stats=self._stats(), metrics=families)

    async def _models_reply(self, request: ModelsQuery) -> WorkerReply:
        await self.account.ensure_models()
        return Models(
            id=request.id,
            account=self.spec.name,
            models=self._models(),
            aliases=self.spec.model_aliases,
        )

    async def _models_raw_reply(self, request: ModelsRawQuery) -> WorkerReply:
        await self.account.ensure_models()
        raw = self.cloud.raw_models if self.cloud is not None else {}
        return ModelsRaw(id=request.id, account=self.spec.name, raw=raw or self.account.raw_models)

    async def _login_status(self, request: LoginStatusQuery) -> WorkerReply:
        await self.account.refresh_login()
        return self.account.login.info(request.id)

    async def _clear_cooldown(self, request: ClearCooldown) -> WorkerReply:
        self.account.clear_cooldown()
        return Ok(id=request.id, message="cooldown cleared")

    async def _drain_request(self, request: Drain) -> WorkerReply:
        self.request_stop(request.grace_s)
        return Ok(id=request.id, message=f"draining for up to {request.grace_s:.1f}s")

    async def _login_start(self, request: LoginStart) -> WorkerReply:
        login = self.account.login
        if self.account.client is None:
            message = "Lingma runtime is not up"
            return Failure(id=request.id, code=ErrorCode.UNAVAILABLE, message=message)
        if await self.account.refresh_login() is LoginState.LOGGED_IN:
            return login.info(request.id)
        if login.auto_configured:
            login.start_auto()
        else:
            await login.manual_url()
        return login.info(request.id)

    async def _export(self, request: LoginBundleQuery) -> WorkerReply:
        rid = request.id
        if await self.account.refresh_login() is not LoginState.LOGGED_IN:
            return Failure(
                id=rid,
                code=ErrorCode.NOT_LOGGED_IN,
                message=f"account {self.spec.name} is not logged in",
            )
        try:
            raw = await asyncio.to_thread(bundles.pack_workdir, self.spec.work_dir)
        except (bundles.BundleError, OSError) as exc:
            return Failure(id=rid, code=ErrorCode.INTERNAL, message=f"export failed: {exc}")
        log.info("session bundle exported", extra={"raw_bytes": len(raw)})
        return LoginBundle(
            id=rid,
            account=self.spec.name,
            raw_bytes=len(raw),
            bundle_b64=bundles.encode_bundle(raw),
        )


# --------------------------------------------------------------------------- entry points


def spec_problem(spec: WorkerSpec) -> str | None:
    """Why this spec can never work, or None."""
    if not spec.name:
        return "the worker has no name"
    if not binary_usable(spec.binary):
        return f"binary {spec.binary!r} is missing or not executable"
    if len(os.fsencode(spec.socket_path)) > MAX_SOCKET_PATH:
        return f"socket path {spec.socket_path!r} is longer than {MAX_SOCKET_PATH} bytes"
    try:
        Path(spec.work_dir).mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        return f"work dir {spec.work_dir!r} is unusable: {exc}"
    if spec.max_concurrency < 1:
        return "max_concurrency must be at least 1"
    return None


async def serve(spec: WorkerSpec) -> int:
    problem = spec_problem(spec)
    if problem is not None:
        log.error("cannot start worker: %s", problem)
        return EXIT_CANNOT_START
    return await Worker(spec).run()


def start(spec: WorkerSpec) -> None:
    """Isolate, log, serve on uvloop, exit with the code (shared by `run` and `__main__`)."""
    isolate_child()
    configure_logging(f"worker:{spec.name}", spec.log_level)
    code = uvloop.run(serve(spec))
    sys.exit(code)


def run(spec_bytes: bytes) -> None:
    """Spawn entry point: a msgpack-encoded WorkerSpec."""
    try:
        spec = msgspec.msgpack.decode(spec_bytes, type=WorkerSpec)
    except msgspec.DecodeError as exc:
        problem = str(exc)
    else:
        start(spec)
        return
    configure_logging("worker:?")
    log.error("unusable worker spec: %s", problem)
    sys.exit(EXIT_CANNOT_START)
