"""Runs in the supervisor: the usage ledger — rows from the fronts, committed to SQLite in batches.

Fronts send rows every half second (`UsageReportRequest`); `submit` only appends them to a list, and
a background task commits the list every `COMMIT_EVERY_S` on the ledger's own thread (stdlib
`sqlite3`, one connection, never touched by the event loop), and once more at shutdown after
every front has sent its last rows. So a SIGTERM or a reload loses nothing, and a SIGKILL of
the supervisor loses what arrived in the last commit interval plus a front's last batch.

When writes fail (database locked by someone else, disk full, file damaged) the ledger turns
DEGRADED: rows stay in memory (bounded) and are retried each interval; requests keep being
served; /healthz and `lingma-gw status` show it. Problems at start (corrupt file, missing
directory, locked) are `LedgerOpenError`: the supervisor refuses to start with the message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from protocol.keys import KeyEntry, KeyLimits
from protocol.usage import LedgerState, UsageGroup, UsageGrouping, UsageRow
from supervisor import ledger_db
from supervisor.ledger_db import LedgerOpenError

log = logging.getLogger(__name__)

T = TypeVar("T")
COMMIT_EVERY_S = 0.5
PRUNE_EVERY_S = 3600.0
OPEN_BUSY_TIMEOUT_S = 2.0  # at start: wait this long for a lock before refusing
WRITE_BUSY_TIMEOUT_MS = 250  # while serving: a locked database degrades, it does not stall
MAX_PENDING = 500_000  # rows kept in memory while writes fail (about 100 MB)
REMIND_EVERY_S = 60.0

__all__ = ["Ledger", "LedgerOpenError"]


class Ledger:
    def __init__(
        self,
        path: str,
        *,
        record: bool = True,
        retention_days: int = 30,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.record = record
        self.retention_days = retention_days
        self._clock = clock
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger")
        self._conn: sqlite3.Connection | None = None
        self._pending: list[UsageRow] = []
        self._task: asyncio.Task[None] | None = None
        self._write_lock = asyncio.Lock()
        self.state = LedgerState.OK if record else LedgerState.OFF
        self.note = ""
        self.written = 0
        self.dropped = 0
        self._reminded_at = 0.0

    @property
    def pending(self) -> int:
        return len(self._pending)

    # ------------------------------------------------------------------ life cycle

    async def open(self) -> None:
        """Open or create the file and check it; raises LedgerOpenError with advice."""
        self._conn = await self._in_thread(ledger_db.connect, self.path, OPEN_BUSY_TIMEOUT_S)
        await self._db(lambda c: c.execute(f"PRAGMA busy_timeout={WRITE_BUSY_TIMEOUT_MS}"))
        if self.record:
            await self._prune()
        self._task = asyncio.create_task(self._loop(), name="ledger")

    async def close(self) -> None:
        """At shutdown, after the fronts sent their last rows: commit them, then close."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._conn is not None:
            await self.commit()
            if self._pending:
                log.error("usage ledger: %d rows could not be written at exit", self.pending)
            conn, self._conn = self._conn, None
            await self._in_thread(conn.close)
        self._executor.shutdown(wait=True)

    async def _loop(self) -> None:
        pruned_at = time.monotonic()
        while True:
            await asyncio.sleep(COMMIT_EVERY_S)
            await self.commit()
            if self.record and time.monotonic() - pruned_at > PRUNE_EVERY_S:
                pruned_at = time.monotonic()
                await self._prune()

    # ------------------------------------------------------------------ rows

    def submit(self, rows: list[UsageRow]) -> None:
        """From a front's report: queue for the next commit (never blocks, never fails)."""
        if not self.record:
            return
        self._pending.extend(rows)
        if len(self._pending) > MAX_PENDING:
            excess = len(self._pending) - MAX_PENDING
            del self._pending[:excess]
            self.dropped += excess
            log.error("usage ledger: dropped %d rows (writes keep failing)", excess)

    async def commit(self) -> bool:
        """Write every queued row in one transaction; False (rows kept) when that fails."""
        async with self._write_lock:
            if not self._pending or self._conn is None:
                return not self._pending
            batch, self._pending = self._pending, []
            try:
                await self._db(lambda c: ledger_db.insert_rows(c, batch))
            except (sqlite3.Error, OSError) as exc:
                self._pending[:0] = batch  # first in line for the next try
                self._degrade(f"{type(exc).__name__}: {exc}")
                return False
            self.written += len(batch)
            self._recover()
            return True

    def _degrade(self, note: str) -> None:
        now = time.monotonic()
        if self.state is not LedgerState.DEGRADED or now - self._reminded_at > REMIND_EVERY_S:
            log.warning(
                "usage ledger %s cannot be written (%s): %d rows wait in memory, requests "
                "are still served",
                self.path,
                note,
                self.pending,
            )
            self._reminded_at = now
        self.state, self.note = LedgerState.DEGRADED, note

    def _recover(self) -> None:
        if self.state is LedgerState.DEGRADED:
            log.info("usage ledger %s writable again: queued rows written", self.path)
            self.state, self.note = LedgerState.OK, ""

    async def _prune(self) -> None:
        try:
            removed = await self._db(
                lambda c: ledger_db.prune(c, self.retention_days, self._clock())
            )
        except (sqlite3.Error, OSError) as exc:
            log.warning(
                "usage ledger: pruning rows older than %d days failed: %s", self.retention_days, exc
            )
            return
        if removed:
            log.info(
                "usage ledger: pruned %d rows older than %d days", removed, self.retention_days
            )

    # ------------------------------------------------------------------ queries

    async def summary(self, by: UsageGrouping, since_s: float) -> list[UsageGroup]:
        await self.commit()  # what was just served shows up
        return await self._db(lambda c: ledger_db.summary(c, by, since_s, self._clock()))

    async def today_by_key(self) -> dict[str, tuple[int, int]]:
        day_start = self._clock() // 86400 * 86400
        return await self._db(lambda c: ledger_db.today_by_key(c, day_start))

    # ------------------------------------------------------------------ CLI keys

    async def load_keys(self) -> list[tuple[KeyEntry, float]]:
        return await self._db(ledger_db.load_keys)

    async def add_key(self, name: str, digest: str, limits: KeyLimits) -> None:
        await self._db(lambda c: ledger_db.add_key(c, name, digest, limits))

    async def set_limits(self, name: str, limits: KeyLimits) -> bool:
        return await self._db(lambda c: ledger_db.set_limits(c, name, limits))

    async def remove_key(self, name: str) -> bool:
        return await self._db(lambda c: ledger_db.remove_key(c, name))

    # ------------------------------------------------------------------ thread

    async def _db(self, work: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._conn
        if conn is None:
            raise sqlite3.OperationalError("the usage database is not open")
        return await self._in_thread(work, conn)

    async def _in_thread(self, work: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, work, *args)
