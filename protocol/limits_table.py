"""Shared by supervisor and fronts: the host-wide per-key limit counters, one shared-memory file.

Several fronts share the port (SO_REUSEPORT), so a key's limits must be counted across all of
them. The supervisor creates `<runtime_dir>/key-limits.shm` at start (zeroed, 0600); every
front maps it. One row per key slot (the supervisor assigns slots); in each row:

* `tat_ns`: the rpm bucket as GCRA's theoretical arrival time in ns (one number, exact
  Retry-After);
* `day` / `day_tokens`: prompt + completion tokens counted so far on that UTC day;
* one in-flight counter per front *column*: a crashed front's requests are forgotten by
  zeroing its column when the supervisor starts its successor (or gives the column to
  another front), instead of leaking a concurrency slot forever.

Check-and-increment happens under `flock` on the file: a few microseconds, no syscall but
the lock pair, so no front waits on another for longer than one row update.
"""

from __future__ import annotations

import enum
import fcntl
import math
import mmap
import os
import struct
from dataclasses import dataclass

from protocol.keys import KeyLimits

MAGIC = b"LGWKEYS1"
HEADER = struct.Struct("<8sII")  # magic, rows, columns
HEADER_BYTES = 64
FIELDS = 4  # tat_ns, day, day_tokens, reserved; then the columns
DAY_S = 86400
_FIELDS = struct.Struct(f"<{FIELDS}q")
_CELL = struct.Struct("<q")
DEFAULT_ROWS = 4096
DEFAULT_COLUMNS = 130  # 64 fronts, each possibly beside its replacement during a reload, + 2


class Verdict(enum.Enum):
    ADMITTED = "admitted"
    TOKENS_PER_DAY = "tokens_per_day"
    MAX_CONCURRENT = "max_concurrent"
    RPM = "rpm"


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    retry_after: float = 0.0  # seconds until the same request would pass (0 when admitted)
    in_flight: int = 0
    tokens_today: int = 0


def gcra(tat_ns: int, now_ns: int, rpm: int) -> tuple[bool, int, float]:
    """One rpm check: (admitted, new tat, seconds to wait). A bucket of `rpm` requests that
    refills continuously at `rpm` per minute: a burst of up to rpm, then one per 60/rpm s."""
    interval = max(1, 60_000_000_000 // rpm)  # nanoseconds: exact up to 60 billion rpm
    tolerance = interval * (rpm - 1)
    tat = max(tat_ns, now_ns)
    if tat - now_ns > tolerance:
        return False, tat_ns, (tat - now_ns - tolerance) / 1e9
    return True, tat + interval, 0.0


def day_of(now: float) -> int:
    return int(now // DAY_S)


def seconds_to_next_day(now: float) -> float:
    return (day_of(now) + 1) * DAY_S - now


class LimitsTable:
    """One mapping of the file; every method takes the lock itself and never blocks long."""

    def __init__(self, fd: int, mapping: mmap.mmap, rows: int, columns: int) -> None:
        self._fd = fd
        self._map = mapping
        self.rows = rows
        self.columns = columns
        self._row = struct.Struct(f"<{FIELDS + columns}q")

    @classmethod
    def create(
        cls, path: str, rows: int = DEFAULT_ROWS, columns: int = DEFAULT_COLUMNS
    ) -> LimitsTable:
        """Supervisor: a fresh zeroed table (an old one from a previous run is replaced)."""
        size = HEADER_BYTES + rows * (FIELDS + columns) * 8
        tmp = f"{path}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.ftruncate(fd, size)
            os.pwrite(fd, HEADER.pack(MAGIC, rows, columns), 0)
            os.replace(tmp, path)
        except OSError:
            os.close(fd)
            raise
        return cls(fd, mmap.mmap(fd, size), rows, columns)

    @classmethod
    def attach(cls, path: str) -> LimitsTable:
        """Front: map the supervisor's table; ValueError when it is not one."""
        fd = os.open(path, os.O_RDWR)
        magic, rows, columns = HEADER.unpack(os.pread(fd, HEADER.size, 0))
        size = HEADER_BYTES + rows * (FIELDS + columns) * 8
        if magic != MAGIC or os.fstat(fd).st_size < size:
            os.close(fd)
            raise ValueError(f"{path} is not a lingma-gw key-limits table")
        try:
            return cls(fd, mmap.mmap(fd, size), rows, columns)
        except OSError:
            os.close(fd)
            raise

    def close(self) -> None:
        self._map.close()
        os.close(self._fd)

    def _offset(self, slot: int) -> int:
        if not 0 <= slot < self.rows:
            raise IndexError(f"key slot {slot} outside the table's {self.rows} rows")
        return HEADER_BYTES + slot * self._row.size

    def _column_offset(self, slot: int, column: int) -> int:
        if not 0 <= column < self.columns:
            raise IndexError(f"column {column} outside the table's {self.columns} columns")
        return self._offset(slot) + (FIELDS + column) * 8

    # ------------------------------------------------------------------ fronts

    def admit(self, slot: int, column: int, limits: KeyLimits, now: float) -> Decision:
        """Check every limit of one key, and count the request only when all pass."""
        base = self._offset(slot)
        cell = self._column_offset(slot, column)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            row = self._row.unpack_from(self._map, base)
            tat_ns, day, day_tokens = row[0], row[1], row[2]
            today = day_of(now)
            tokens = day_tokens if day == today else 0
            in_flight = sum(row[FIELDS:])
            refusal = _refusal(limits, now, tokens, in_flight)
            if refusal is not None:
                return refusal
            if limits.rpm:
                ok, tat_ns, wait = gcra(tat_ns, int(now * 1e9), limits.rpm)
                if not ok:
                    return Decision(Verdict.RPM, wait, in_flight, tokens)
            _FIELDS.pack_into(self._map, base, tat_ns, today, tokens, 0)
            _CELL.pack_into(self._map, cell, row[FIELDS + column] + 1)
            return Decision(Verdict.ADMITTED, 0.0, in_flight + 1, tokens)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def release(self, slot: int, column: int, tokens: int, now: float) -> None:
        """A request admitted by `admit` ended: free its concurrency slot, count its tokens."""
        base = self._offset(slot)
        cell = self._column_offset(slot, column)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            tat_ns, day, day_tokens, _ = _FIELDS.unpack_from(self._map, base)
            today = day_of(now)
            total = (day_tokens if day == today else 0) + max(0, tokens)
            _FIELDS.pack_into(self._map, base, tat_ns, today, total, 0)
            (held,) = _CELL.unpack_from(self._map, cell)
            _CELL.pack_into(self._map, cell, max(0, held - 1))
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    # ------------------------------------------------------------------ supervisor

    def clear_column(self, column: int) -> None:
        """The front that used `column` is gone: its in-flight requests are over."""
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            for slot in range(self.rows):
                _CELL.pack_into(self._map, self._column_offset(slot, column), 0)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def clear_row(self, slot: int) -> None:
        """A slot given to another key starts from nothing."""
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            base = self._offset(slot)
            self._map[base : base + self._row.size] = bytes(self._row.size)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def seed_tokens(self, slot: int, now: float, tokens: int) -> None:
        """At start: the tokens the ledger already holds for today (a restart resets nothing)."""
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            base = self._offset(slot)
            tat_ns = _FIELDS.unpack_from(self._map, base)[0]
            _FIELDS.pack_into(self._map, base, tat_ns, day_of(now), tokens, 0)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def in_flight(self, slot: int) -> int:
        return sum(self._row.unpack_from(self._map, self._offset(slot))[FIELDS:])

    def tokens_today(self, slot: int, now: float) -> int:
        _, day, tokens, _ = _FIELDS.unpack_from(self._map, self._offset(slot))
        return int(tokens) if day == day_of(now) else 0


def _refusal(limits: KeyLimits, now: float, tokens: int, in_flight: int) -> Decision | None:
    if limits.tokens_per_day and tokens >= limits.tokens_per_day:
        wait = seconds_to_next_day(now)
        return Decision(Verdict.TOKENS_PER_DAY, math.ceil(wait), in_flight, tokens)
    if limits.max_concurrent and in_flight >= limits.max_concurrent:
        return Decision(Verdict.MAX_CONCURRENT, 1.0, in_flight, tokens)
    return None
