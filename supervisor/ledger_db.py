"""Runs in the supervisor's ledger thread: the SQLite schema and every statement on it.

One file (WAL, so `lingma-gw usage` and a backup can read while rows are written) with two
tables: `usage`, one row per chat request, and `keys`, the keys made with `lingma-gw keys
add` (digests only). Plain functions over a `sqlite3.Connection` that only the ledger's one
thread touches; supervisor/ledger.py decides when they run.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterable

import msgspec

from protocol.keys import KeyEntry, KeyLimits, KeySource
from protocol.usage import UsageGroup, UsageGrouping, UsageRow

SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS usage (
    ts REAL NOT NULL,
    key TEXT NOT NULL,
    account TEXT NOT NULL,
    model TEXT NOT NULL,
    api TEXT NOT NULL,
    status INTEGER NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    latency_ms REAL NOT NULL,
    ttft_ms REAL,
    session_reused INTEGER NOT NULL,
    front INTEGER NOT NULL,
    request_id TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS usage_ts ON usage (ts);
CREATE TABLE IF NOT EXISTS keys (
    name TEXT PRIMARY KEY,
    sha256 TEXT NOT NULL UNIQUE,
    limits TEXT NOT NULL,
    created_at REAL NOT NULL
);
"""
_COLUMNS = {
    UsageGrouping.KEY: "key",
    UsageGrouping.ACCOUNT: "account",
    UsageGrouping.MODEL: "model",
}
LIMITED_STATUS = 429


class LedgerOpenError(Exception):
    """The database cannot be used at start: the message says what to do."""


def connect(path: str, busy_timeout_s: float) -> sqlite3.Connection:
    """Open (creating when absent) and check the schema; raises LedgerOpenError."""
    directory = os.path.dirname(path) or "."
    if not os.path.isdir(directory):
        raise LedgerOpenError(f"usage database {path}: directory {directory} does not exist")
    try:
        conn = sqlite3.connect(path, timeout=busy_timeout_s, isolation_level=None)
    except sqlite3.Error as exc:
        raise LedgerOpenError(f"usage database {path}: cannot open: {exc}") from None
    try:
        os.chmod(path, 0o600)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a power cut loses the last
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version <= SCHEMA_VERSION:
            conn.executescript(SCHEMA)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    except (sqlite3.Error, OSError) as exc:
        conn.close()
        raise LedgerOpenError(describe_open_error(path, exc)) from None
    if version > SCHEMA_VERSION:
        conn.close()
        raise LedgerOpenError(
            f"usage database {path}: schema {version} is newer than this lingma-gw "
            f"understands ({SCHEMA_VERSION}): use the newer lingma-gw or another file"
        )
    return conn


def describe_open_error(path: str, exc: BaseException) -> str:
    text = str(exc)
    if "not a database" in text or "malformed" in text:
        advice = (
            f"the file is corrupt or not a SQLite database: move it aside (mv {path} "
            f"{path}.bad), start again, and recover rows and keys from the copy with "
            "`sqlite3 FILE .recover` if you need them"
        )
    elif "locked" in text or "busy" in text:
        advice = "another process holds it locked (find it with `fuser` or `lsof`)"
    elif "full" in text:
        advice = "the disk is full: free space on its filesystem"
    elif "readonly" in text or "read-only" in text or isinstance(exc, PermissionError):
        advice = "it is read-only for the service user: fix its owner and mode"
    else:
        advice = "check the file and its directory"
    return f"usage database {path}: {text}: {advice}"


def insert_rows(conn: sqlite3.Connection, rows: Iterable[UsageRow]) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.executemany(
            "INSERT INTO usage VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                (
                    r.ts, r.key, r.account, r.model, r.api, r.status, r.prompt_tokens,
                    r.completion_tokens, r.latency_ms, r.ttft_ms, int(r.session_reused),
                    r.front, r.request_id,
                )
                for r in rows
            ),
        )  # fmt: skip
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def prune(conn: sqlite3.Connection, retention_days: int, now: float) -> int:
    cursor = conn.execute("DELETE FROM usage WHERE ts < ?", (now - retention_days * 86400,))
    return cursor.rowcount


def summary(
    conn: sqlite3.Connection, by: UsageGrouping, since_s: float, now: float
) -> list[UsageGroup]:
    column = _COLUMNS[by]
    query = f"""
        SELECT {column}, COUNT(*), SUM(status >= 400), SUM(status = {LIMITED_STATUS}),
               SUM(prompt_tokens), SUM(completion_tokens), AVG(latency_ms), AVG(ttft_ms),
               AVG(session_reused)
        FROM usage WHERE ts >= ? GROUP BY {column} ORDER BY COUNT(*) DESC, {column}
    """  # noqa: S608 - the column comes from a fixed table, values are bound
    return [
        UsageGroup(
            name=row[0] or "-",
            requests=row[1],
            errors=row[2] or 0,
            limited=row[3] or 0,
            prompt_tokens=row[4] or 0,
            completion_tokens=row[5] or 0,
            avg_latency_ms=round(row[6] or 0.0, 1),
            avg_ttft_ms=round(row[7], 1) if row[7] is not None else None,
            session_reuse_rate=round(row[8] or 0.0, 4),
        )
        for row in conn.execute(query, (now - since_s,))
    ]


def today_by_key(conn: sqlite3.Connection, day_start: float) -> dict[str, tuple[int, int]]:
    """key name -> (requests, prompt + completion tokens) since `day_start`."""
    rows = conn.execute(
        "SELECT key, COUNT(*), SUM(prompt_tokens + completion_tokens) FROM usage "
        "WHERE ts >= ? GROUP BY key",
        (day_start,),
    )
    return {name: (count, tokens or 0) for name, count, tokens in rows}


# --------------------------------------------------------------------------- CLI keys


def load_keys(conn: sqlite3.Connection) -> list[tuple[KeyEntry, float]]:
    out = []
    for name, digest, limits, created_at in conn.execute(
        "SELECT name, sha256, limits, created_at FROM keys ORDER BY created_at, name"
    ):
        entry = KeyEntry(
            name=name,
            sha256=digest,
            source=KeySource.CLI,
            slot=-1,
            limits=msgspec.json.decode(limits, type=KeyLimits),
        )
        out.append((entry, created_at))
    return out


def add_key(conn: sqlite3.Connection, name: str, digest: str, limits: KeyLimits) -> None:
    conn.execute(
        "INSERT INTO keys VALUES (?,?,?,?)",
        (name, digest, msgspec.json.encode(limits).decode(), time.time()),
    )


def set_limits(conn: sqlite3.Connection, name: str, limits: KeyLimits) -> bool:
    cursor = conn.execute(
        "UPDATE keys SET limits = ? WHERE name = ?", (msgspec.json.encode(limits).decode(), name)
    )
    return cursor.rowcount == 1


def remove_key(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute("DELETE FROM keys WHERE name = ?", (name,)).rowcount == 1
