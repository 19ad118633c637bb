"""Runs in the worker: every connection to one running Lingma binary, and what it has shown.

Shared connections (`[lingma] acp_connections`, default 1; the first also carries the short
calls) serve every ACP chat at once, multiplexed by request id, as lingma-proxy does
(lingma-protocol.md §3.6): an ACP-only runtime sees exactly one client. Legacy `chat/ask` needs
a connection to itself while it runs (§6.1, §11.7), so legacy asks lease connections from a
small pool. A runtime that accepts one client at a time closes the previous connection when a
new one arrives: the client notices that eviction and from then on runs everything over one
connection (calls and ACP chats multiplexed, legacy asks one at a time on its `ask_slot`).

One client lives as long as one binary start, so what it learned about the runtime (ACP usable
or not, one client or many) is forgotten when the binary restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
import logging
import time
from pathlib import Path
from typing import Any

import aiohttp

from worker.discovery import machine_token_headers
from worker.rpc import RpcClosed, RpcConnection

log = logging.getLogger(__name__)

EVICTION_WINDOW_S = 3.0  # a connection lost this soon after we opened another: evicted
LEASE_ATTEMPTS = 3


class ClientMode(enum.StrEnum):
    MANY = "many"  # the runtime serves several connections at once
    SINGLE = "single"  # a new connection closes the previous one: use exactly one


class AcpSupport(enum.StrEnum):
    UNKNOWN = "unknown"
    YES = "yes"
    NO = "no"  # session/new failed or hung: legacy chat/ask for this binary's life


class RuntimeClient:
    def __init__(
        self, work_dir: Path, *, rpc_timeout: float, max_idle: int, shared: int = 1
    ) -> None:
        self.work_dir = work_dir
        self.workspace = work_dir / "workspace"
        self.rpc_timeout = rpc_timeout
        self.max_idle = max_idle
        self.port = 0
        self.server_info: dict[str, Any] = {}
        self.mode = ClientMode.MANY
        self.acp = AcpSupport.UNKNOWN
        # No connector cap (legacy asks each lease a WebSocket) and no session-wide `total`
        # timeout: aiohttp keeps that timer armed for a WebSocket's whole life. Connecting is
        # bounded by RpcConnection.open, calls by their own timeouts.
        self._http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=None)
        )
        self._shared: list[RpcConnection | None] = [None] * max(1, shared)
        # One connection opens at a time: on a one-client runtime each open evicts the last,
        # and concurrent opens would keep evicting each other before the switch to one.
        self._open_lock = asyncio.Lock()
        self._turns = itertools.count()
        self._idle: list[RpcConnection] = []
        self._leased: set[RpcConnection] = set()
        self._last_open_started = 0.0
        self._evicted_at = 0.0
        self._closing: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def one_client(self) -> bool:
        """The runtime has shown it serves one client at a time (re-read after every await)."""
        return self.mode is ClientMode.SINGLE

    async def connect(self, port: int, timeout: float) -> None:
        """Open and initialize the first shared connection; raises while the runtime is not up."""
        self.port = port
        self.workspace.mkdir(parents=True, exist_ok=True)
        first = await self._shared_connection(0, timeout)
        self.server_info = first.server_info

    async def call(
        self, method: str, params: dict[str, Any] | None = None, timeout: float | None = None
    ) -> Any:
        """A short call on the first shared connection, reopening it once if it was lost."""
        limit = timeout or self.rpc_timeout
        for attempt in (1, 2):
            connection = await self._shared_connection(0, limit)
            try:
                return await connection.call(method, params or {}, limit)
            except RpcClosed:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def shared(self) -> RpcConnection:
        """A connection for one ACP chat: the shared ones take turns."""
        index = 0 if self.mode is ClientMode.SINGLE else next(self._turns) % len(self._shared)
        return await self._shared_connection(index, self.rpc_timeout)

    async def lease(self) -> RpcConnection:
        """A connection for one legacy ask, its `ask_slot` held: give it back with `release`."""
        for _attempt in range(LEASE_ATTEMPTS):
            connection = await self._lease_candidate()
            if connection is None:
                continue  # the runtime turned out to take one client: use that one
            await connection.ask_slot.acquire()
            if not connection.closed:
                return connection
            await self.release(connection, reusable=False)  # lost while we waited its turn
        raise RpcClosed("no runtime connection stayed open for the ask")

    async def _lease_candidate(self) -> RpcConnection | None:
        if self.one_client:
            return await self._shared_connection(0, self.rpc_timeout)
        connection = self._idle_connection()
        if connection is None:
            async with self._open_lock:
                if self.one_client:
                    return None
                try:
                    connection = await self._open(self.rpc_timeout)
                except RpcClosed:
                    if self.one_client:  # evicted while it initialized
                        return None
                    raise
        self._leased.add(connection)
        return connection

    async def release(self, connection: RpcConnection, *, reusable: bool) -> None:
        if connection.ask_slot.locked():
            connection.ask_slot.release()
        self._leased.discard(connection)
        if connection in self._shared:
            return  # one client at a time: the leased connection is the shared one
        keep = reusable and not connection.closed and not self._closed
        if keep and self.mode is ClientMode.MANY and len(self._idle) < self.max_idle:
            self._idle.append(connection)
            return
        await connection.close()

    async def close(self) -> None:
        self._closed = True
        connections = {*self._idle, *self._leased, *(c for c in self._shared if c is not None)}
        self._idle.clear()
        self._shared = [None] * len(self._shared)
        try:
            await asyncio.gather(*(c.close() for c in connections), return_exceptions=True)
        finally:  # even when shutdown cancels us mid-way: no "Unclosed client session"
            await self._http.close()

    # ----------------------------------------------------------------- connections

    def _idle_connection(self) -> RpcConnection | None:
        while self._idle:
            connection = self._idle.pop()
            if not connection.closed:
                return connection
        return None

    async def _shared_connection(self, index: int, timeout: float) -> RpcConnection:
        connection = self._shared[index]
        if connection is not None and not connection.closed:
            return connection
        async with self._open_lock:
            if self.one_client:
                index = 0  # an eviction switched modes while we waited
            connection = self._shared[index]
            if connection is None or connection.closed:
                connection = await self._open(timeout)
                if self.one_client:
                    index = 0  # ... or while this one opened
                self._shared[index] = connection
            return connection

    async def _open(self, timeout: float) -> RpcConnection:
        """Connect and initialize; callers hold `_open_lock`."""
        if self._closed:
            raise RpcClosed("client closed")
        started = self._last_open_started = time.monotonic()
        connection = await RpcConnection.open(
            self._http, self.port, timeout=timeout, headers=machine_token_headers(self.work_dir)
        )
        connection.on_lost = self._lost
        try:
            await connection.initialize(self.workspace, timeout)
        except BaseException:
            with contextlib.suppress(Exception):
                await connection.close()
            raise
        if self._evicted_at >= started and not connection.closed:
            self._one_client_at_a_time(connection)
        return connection

    def _lost(self, connection: RpcConnection) -> None:
        """The runtime closed one of ours: evicted, if we had just opened another?"""
        if self._closed or self.mode is ClientMode.SINGLE:
            return
        now = time.monotonic()
        if (
            not connection.opened_at
            < self._last_open_started
            <= now
            <= (self._last_open_started + EVICTION_WINDOW_S)
        ):
            return
        self._evicted_at = now
        newer = [c for c in self._live() if c.opened_at > connection.opened_at]
        if newer:
            self._one_client_at_a_time(max(newer, key=lambda c: c.opened_at))

    def _live(self) -> list[RpcConnection]:
        every = [*self._idle, *self._leased, *(c for c in self._shared if c is not None)]
        return [c for c in every if not c.closed]

    def _one_client_at_a_time(self, survivor: RpcConnection) -> None:
        if self.mode is ClientMode.SINGLE:
            return
        log.warning(
            "the runtime closed a connection when we opened another: it serves one client "
            "at a time, so everything now runs over one connection"
        )
        self.mode = ClientMode.SINGLE
        others = [c for c in (*self._idle, *self._shared) if c is not None and c is not survivor]
        self._shared = [survivor]
        self._idle.clear()
        for other in others:
            task = asyncio.get_running_loop().create_task(other.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
