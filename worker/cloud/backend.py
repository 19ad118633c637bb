"""Runs in the worker: the cloud backend as the worker sees it — one object to start and ask.

Owns the worker's one cloud HTTP session, the account's cloud standing (credential, base URL,
models) and the chat path (worker/cloud/path.py) the worker's chat runner uses when the
account's `backend` is "cloud". The runtime keeps running beside it: it holds and refreshes
the login.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from protocol.specs import WorkerSpec
from protocol.worker_socket import ModelInfo
from worker.cloud.access import CloudAccess, RuntimeView
from worker.cloud.client import CloudClient
from worker.cloud.path import CloudPath


class CloudBackend:
    def __init__(self, spec: WorkerSpec, *, runtime: RuntimeView) -> None:
        self.spec = spec
        self.client = CloudClient(timeout_s=spec.rpc_timeout_s)
        self.access = CloudAccess(spec, runtime, self.client)
        self.path = CloudPath(
            spec, access=self.access, client=self.client, runtime_models=runtime.resolver
        )
        self._upkeep: asyncio.Task[None] | None = None

    @property
    def ready(self) -> bool:
        return self.access.ready

    @property
    def note(self) -> str:
        return self.access.note

    @property
    def models(self) -> list[ModelInfo]:
        return self.access.models

    @property
    def raw_models(self) -> dict[str, Any]:
        return self.access.raw_models

    def start(self) -> None:
        self._upkeep = asyncio.create_task(self.access.run(), name="cloud-upkeep")

    def poke(self) -> None:
        """Something changed (login, restart): re-check the credential and base URL now."""
        self.access.poke()

    async def stop(self) -> None:
        if self._upkeep is not None:
            self._upkeep.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._upkeep
        await self.client.close()

    def refusal(self) -> str | None:
        """Why this worker cannot take a chat now, on top of the runtime side's reasons."""
        if self.access.ready:
            return None
        return f"account {self.spec.name}: {self.access.note or 'cloud backend not ready'}"
