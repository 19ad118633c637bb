"""Runs in the supervisor: what each control-socket request does (status, reload, restart, ...).

Account-level requests (login, export-session) are forwarded to that account's worker over
its socket and its reply translated into a `OkReply` / `ErrorReply`; secrets in those
replies (the login bundle) go back to the caller only, never into a log line. Requests about
named keys and the usage ledger (protocol/keys.py, protocol/usage.py) go to the key service.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from importlib import metadata
from typing import Any

import msgspec

from protocol.chat import Failure
from protocol.child_socket import ChildStats
from protocol.control_socket import (
    ChildStatus,
    ControlReply,
    ErrorReply,
    ExportLoginBundleRequest,
    LoginRequest,
    MetricsReply,
    MetricsRequest,
    OkReply,
    ReloadRequest,
    RestartWorkerRequest,
    StatsRequest,
    StatusReply,
    StatusRequest,
)
from protocol.framing import FrameError
from protocol.keys import KeysRequest
from protocol.usage import UsageReportRequest, UsageRequest
from protocol.vocabulary import Backend, BinaryState, ErrorCode, LoginState
from protocol.worker_socket import LoginBundle, LoginBundleQuery, LoginInfo, LoginStart
from supervisor.config import ServerConfig
from supervisor.handle import ChildHandle, NotConnected
from supervisor.ledger import Ledger
from supervisor.metrics import MetricsAggregate
from supervisor.procfacts import FactsSampler
from supervisor.roster import Roster

FORWARD_TIMEOUT_S = 30.0
METRICS_MAX_AGE_S = 1.0


def version() -> str:
    try:
        return metadata.version("lingma-gw")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0+unknown"


class Commands:
    def __init__(
        self,
        *,
        roster: Roster,
        metrics: MetricsAggregate,
        reload: Callable[[], Awaitable[ControlReply]],
        keys: Callable[[KeysRequest | UsageReportRequest | UsageRequest], Awaitable[ControlReply]],
        ledger: Callable[[], Ledger],
        settings: Callable[[], ServerConfig],
        started_at: float,
    ) -> None:
        self._roster = roster
        self._metrics = metrics
        self._reload = reload
        self._keys = keys
        self._ledger = ledger
        self._settings = settings  # the [server] section of the config running now
        self._started_at = started_at
        self._sampler = FactsSampler()  # its own: cpu_percent is "since my last look"

    async def handle(self, request: Any) -> ControlReply:  # noqa: PLR0911 - one per request
        match request:
            case StatusRequest():
                return self.status()
            case ReloadRequest():
                return await self._reload()
            case RestartWorkerRequest(name=name):
                return self.restart(name)
            case LoginRequest(name=name):
                return await self._forward(name, LoginStart, _login_reply)
            case ExportLoginBundleRequest(name=name):
                return await self._forward(name, LoginBundleQuery, _bundle_reply)
            case StatsRequest():
                await self._metrics.refresh(METRICS_MAX_AGE_S)
                return self.stats()
            case MetricsRequest():
                await self._metrics.refresh(METRICS_MAX_AGE_S)
                return MetricsReply(text=self._metrics.render())
            case KeysRequest() | UsageReportRequest() | UsageRequest():
                return await self._keys(request)
        return ErrorReply(code=ErrorCode.UNSUPPORTED, message="unknown control request")

    def _worker(self, name: str) -> ChildHandle | ErrorReply:
        handle = self._roster.worker(name)
        if handle is None:
            known = ", ".join(sorted(h.name for h in self._roster.workers())) or "none"
            return ErrorReply(
                code=ErrorCode.NOT_FOUND, message=f"no account named {name!r} (accounts: {known})"
            )
        return handle

    def restart(self, name: str) -> ControlReply:
        handle = self._worker(name)
        if isinstance(handle, ErrorReply):
            return handle
        was = handle.state.value
        if not handle.request_restart(self._settings().grace_period_s):
            return ErrorReply(code=ErrorCode.UNAVAILABLE, message="shutting down")
        # A fresh worker process starts with no upstream cooldown: restarting clears it.
        return OkReply(message=f"restarting worker {name} (was {was})")

    async def _forward(self, name: str, request: Any, translate: Any) -> ControlReply:
        handle = self._worker(name)
        if isinstance(handle, ErrorReply):
            return handle
        try:
            reply = await handle.call(lambda i: request(id=i), timeout=FORWARD_TIMEOUT_S)
        except NotConnected as exc:
            return ErrorReply(code=ErrorCode.UNAVAILABLE, message=str(exc))
        except (FrameError, OSError, TimeoutError) as exc:
            return ErrorReply(
                code=ErrorCode.UNAVAILABLE, message=f"worker {name} did not answer: {exc!r}"
            )
        if isinstance(reply, Failure):
            return ErrorReply(code=reply.code, message=reply.message)
        result: ControlReply = translate(reply)
        return result

    # ------------------------------------------------------------------ status

    def status(self) -> StatusReply:
        return StatusReply(
            version=version(),
            pid=os.getpid(),
            uptime_s=time.time() - self._started_at,
            listen=self._settings().listen,
            workers=[self._row(h) for h in self._roster.workers()],
            fronts=[self._row(h) for h in self._roster.fronts()],
            ledger=self._ledger().state,
            ledger_note=self._ledger().note,
        )

    def _row(self, handle: ChildHandle) -> ChildStatus:
        pid = handle.pid
        pong = handle.last_pong if pid else None
        stats = pong.stats if pong is not None else ChildStats()
        own = self._sampler.sample(pid)
        binary = self._sampler.sample(pong.binary_pid if pong is not None else None)
        return ChildStatus(
            name=handle.name,
            kind=handle.kind,
            state=handle.state,
            login=pong.login if pong is not None else LoginState.UNKNOWN,
            login_attempt=pong.login_attempt if pong is not None else 0,
            pid=pid,
            binary_pid=pong.binary_pid if pong is not None else None,
            uptime_s=time.time() - handle.started_at if pid else 0.0,
            restarts=handle.restarts,
            generation=handle.generation,
            in_flight=stats.in_flight,
            queued=stats.queued,
            sessions=stats.sessions,
            rss_bytes=own.rss_bytes + binary.rss_bytes,
            cpu_percent=own.cpu_percent + binary.cpu_percent,
            models=pong.models if pong is not None else 0,
            cooldown_s=max(0.0, pong.cooldown_until - time.time()) if pong is not None else 0.0,
            last_exit=handle.last_exit,
            binary=pong.binary if pong is not None else BinaryState.STOPPED,
            backend=_backend_of(handle),
            note=pong.note if pong is not None else "",
        )

    def stats(self) -> OkReply:
        data = {
            kind: {
                h.name: msgspec.to_builtins(h.last_stats.stats)
                for h in handles
                if h.last_stats is not None
            }
            for kind, handles in (
                ("workers", self._roster.workers()),
                ("fronts", self._roster.fronts()),
            )
        }
        return OkReply(message="stats", data=data)


def _login_reply(reply: Any) -> ControlReply:
    if not isinstance(reply, LoginInfo):
        return ErrorReply(code=ErrorCode.INTERNAL, message=f"unexpected {type(reply).__name__}")
    return OkReply(
        message=reply.message or f"{reply.account}: {reply.login.value}",
        data={
            "account": reply.account,
            "login": reply.login.value,
            "auto_login": reply.auto_login,
            "url": reply.url,
            "user": reply.user,
        },
    )


def _bundle_reply(reply: Any) -> ControlReply:
    if not isinstance(reply, LoginBundle):
        return ErrorReply(code=ErrorCode.INTERNAL, message=f"unexpected {type(reply).__name__}")
    return OkReply(
        message=f"exported {reply.raw_bytes} bytes from {reply.account}",
        data={
            "account": reply.account,
            "raw_bytes": reply.raw_bytes,
            "bundle_b64": reply.bundle_b64,
        },
    )


def _backend_of(handle: ChildHandle) -> str:
    """A worker's chat backend from its spec, so a stopped worker still shows it."""
    backend = getattr(handle.template, "backend", None)
    return str(backend.value) if isinstance(backend, Backend) else ""
