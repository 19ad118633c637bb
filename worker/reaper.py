"""Runs in the worker: deleting the upstream sessions the gateway will never continue.

Every chat opens or continues a Lingma session, and the runtime keeps each one until it is
deleted (lingma-protocol.md §11.7 "delete throw-away sessions"; LP deletes them with
`chat/deleteSessionById`, §5). A session is thrown away when its chat failed or was cancelled,
when session reuse is off, or when the session cache drops it (LRU, TTL, a concurrent twin).
Deleting runs in the background on the control connection, never on a chat's path. Sessions
wait a moment (`LINGER_S`) for company and then go in batches of at most `BATCH` calls at once:
their frames leave in one write (worker/ws_batch.py) and their answers mostly arrive in one
read, where a call per finished chat would cost the worker and the runtime a write and a
wake-up each. Sessions of an earlier binary start are skipped: they died with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections import deque
from collections.abc import Callable

from worker.rpc import RpcClosed, RpcError, refused
from worker.runtime_client import RuntimeClient

log = logging.getLogger(__name__)

MAX_PENDING = 1000  # beyond this the oldest waiting session is forgotten (the runtime keeps it)
BATCH = 16  # deletions in flight at once
LINGER_S = 0.25  # how long a batch that is not full yet waits for more sessions
DELETE = "chat/deleteSessionById"

# The client to delete through, and the binary generation it belongs to.
CurrentRuntime = Callable[[], tuple[RuntimeClient | None, int]]


class DeleteOutcome(enum.StrEnum):
    DELETED = "deleted"
    REFUSED = "refused"  # an error answer or `success: false`
    FAILED = "failed"  # connection lost or timed out: the session is left to the runtime
    STALE = "stale"  # its binary is gone (or not up): nothing to delete
    DROPPED = "dropped"  # the queue was full


class SessionReaper:
    def __init__(
        self,
        current: CurrentRuntime,
        *,
        timeout_s: float,
        on_outcome: Callable[[DeleteOutcome], None] = lambda _outcome: None,
        linger_s: float = LINGER_S,
    ) -> None:
        self._current = current
        self._timeout_s = timeout_s
        self._linger_s = linger_s
        self._on_outcome = on_outcome
        self._pending: deque[tuple[str, int]] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def pending(self) -> int:
        return len(self._pending)

    def discard(self, session_id: str, generation: int) -> None:
        """Queue a session for deletion (safe from any callback; returns at once)."""
        if not session_id:
            return
        if len(self._pending) >= MAX_PENDING:
            self._pending.popleft()
            self._on_outcome(DeleteOutcome.DROPPED)
        self._pending.append((session_id, generation))
        self._wake.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="session-reaper")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            if not self._pending:
                self._wake.clear()
                await self._wake.wait()
                continue
            if len(self._pending) < BATCH:
                await asyncio.sleep(self._linger_s)
            batch = [self._pending.popleft() for _ in range(min(BATCH, len(self._pending)))]
            outcomes = await asyncio.gather(*(self._delete(*entry) for entry in batch))
            for (session_id, _generation), outcome in zip(batch, outcomes, strict=True):
                self._on_outcome(outcome)
                if outcome is DeleteOutcome.REFUSED:
                    log.info("the runtime did not delete session %s", session_id)

    async def _delete(self, session_id: str, generation: int) -> DeleteOutcome:
        client, current = self._current()
        if client is None or generation != current:
            return DeleteOutcome.STALE
        try:
            try:
                result = await client.call(DELETE, {"sessionId": session_id}, self._timeout_s)
            except RpcError:  # LP retries with `{id}` when `{sessionId}` is refused (§5)
                result = await client.call(DELETE, {"id": session_id}, self._timeout_s)
        except RpcError:
            return DeleteOutcome.REFUSED
        except (RpcClosed, TimeoutError, OSError):
            return DeleteOutcome.FAILED
        return DeleteOutcome.REFUSED if refused(result) else DeleteOutcome.DELETED
