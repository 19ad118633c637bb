"""Runs in the worker: every connection to one running Lingma binary.

One control connection carries the short calls (auth/status, models, endpoint). Chats lease a
connection of their own from a small pool, because the runtime is only known to behave with one
in-flight ask per connection (lingma-protocol.md §6.1, §11.7); a connection whose chat ended
cleanly goes back to the pool, so the next chat skips connect + initialize.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

import aiohttp

from worker.rpc import RpcClosed, RpcConnection, machine_token_headers

log = logging.getLogger(__name__)


class LingmaClient:
    def __init__(self, work_dir: Path, *, rpc_timeout: float, max_idle: int) -> None:
        self.work_dir = work_dir
        self.workspace = work_dir / "workspace"
        self.rpc_timeout = rpc_timeout
        self.max_idle = max_idle
        self.port = 0
        self.server_info: dict[str, Any] = {}
        # No connector cap: every in-flight chat leases its own WebSocket, so aiohttp's default
        # limit of 100 would silently stall the 101st concurrent chat. No session-wide `total`
        # timeout either: aiohttp keeps that timer armed for a WebSocket's whole life (one per
        # open stream); connecting is bounded by RpcConnection.open and calls by their own.
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=None)
        )
        self._control: RpcConnection | None = None
        self._control_lock = asyncio.Lock()
        self._idle: list[RpcConnection] = []
        self._leased: set[RpcConnection] = set()
        self._closed = False

    async def connect(self, port: int, timeout: float) -> None:
        """Open and initialize the control connection; raises while the runtime is not ready."""
        self.port = port
        self.workspace.mkdir(parents=True, exist_ok=True)
        self._control = await self._open(timeout)
        self.server_info = self._control.server_info

    async def call(
        self, method: str, params: dict[str, Any] | None = None, timeout: float | None = None
    ) -> Any:
        """A short call on the control connection, reopening it once if it was lost."""
        limit = timeout or self.rpc_timeout
        for attempt in (1, 2):
            connection = await self._control_connection(limit)
            try:
                return await connection.call(method, params or {}, limit)
            except RpcClosed:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def acquire(self) -> RpcConnection:
        while self._idle:
            connection = self._idle.pop()
            if not connection.closed:
                self._leased.add(connection)
                return connection
        connection = await self._open(self.rpc_timeout)
        self._leased.add(connection)
        return connection

    async def release(self, connection: RpcConnection, *, reusable: bool) -> None:
        self._leased.discard(connection)
        connection.on_push = None
        keep = reusable and not connection.closed and not self._closed
        if keep and len(self._idle) < self.max_idle:
            self._idle.append(connection)
            return
        await connection.close()

    @property
    def closed(self) -> bool:
        return self._closed

    async def close(self) -> None:
        self._closed = True
        connections = [*self._idle, *self._leased]
        if self._control is not None:
            connections.append(self._control)
        self._idle.clear()
        self._control = None
        try:
            await asyncio.gather(*(c.close() for c in connections), return_exceptions=True)
        finally:  # even when shutdown cancels us mid-way: no "Unclosed client session"
            await self._session.close()

    async def _control_connection(self, timeout: float) -> RpcConnection:
        async with self._control_lock:
            if self._control is None or self._control.closed:
                if self._closed:
                    raise RpcClosed("client closed")
                self._control = await self._open(timeout)
            return self._control

    async def _open(self, timeout: float) -> RpcConnection:
        if self._closed:
            raise RpcClosed("client closed")
        connection = await RpcConnection.open(
            self._session, self.port, timeout=timeout, headers=machine_token_headers(self.work_dir)
        )
        try:
            await connection.initialize(self.workspace, timeout)
        except BaseException:
            with contextlib.suppress(Exception):
                await connection.close()
            raise
        return connection
