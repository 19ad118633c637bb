"""Component: the usage ledger on a real SQLite file — batches, queries, keys, failures.

No mocks: a corrupt or locked file is a real one, and "disk full" is SQLite's own SQLITE_FULL
(`PRAGMA max_page_count` on a second connection caps the file), the error a full disk gives.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from protocol.keys import KeyLimits
from protocol.usage import LedgerState, UsageGrouping, UsageRow
from supervisor.ledger import Ledger, LedgerOpenError

pytestmark = pytest.mark.component

NOW = 1_800_000_000.0


def row(key: str, status: int = 200, ts: float = NOW, **fields: object) -> UsageRow:
    base: dict[str, object] = {
        "ts": ts, "key": key, "account": "acct-a", "model": "qwen", "api": "openai",
        "status": status, "prompt_tokens": 10, "completion_tokens": 5, "latency_ms": 100.0,
        "ttft_ms": 20.0, "session_reused": False,
    }  # fmt: skip
    base.update(fields)
    return UsageRow(**base)  # type: ignore[arg-type]


def count_rows(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM usage").fetchone()[0])


async def opened(path: Path, **kwargs: object) -> Ledger:
    ledger = Ledger(str(path), clock=lambda: NOW, **kwargs)  # type: ignore[arg-type]
    await ledger.open()
    return ledger


async def test_batches_commit_and_summaries_group_them(tmp_path: Path) -> None:
    path = tmp_path / "usage.db"
    ledger = await opened(path)
    ledger.submit([row("alice"), row("alice", 429, prompt_tokens=0, completion_tokens=0)])
    ledger.submit([row("bob", account="acct-b", session_reused=True, ttft_ms=None)])
    assert ledger.pending == 3 and count_rows(path) == 0  # nothing on the request path
    assert await ledger.commit() and ledger.pending == 0 and count_rows(path) == 3
    by_key = {g.name: g for g in await ledger.summary(UsageGrouping.KEY, 3600)}
    assert (by_key["alice"].requests, by_key["alice"].errors, by_key["alice"].limited) == (2, 1, 1)
    assert by_key["alice"].prompt_tokens == 10 and by_key["bob"].session_reuse_rate == 1.0
    assert by_key["bob"].avg_ttft_ms is None and by_key["alice"].avg_ttft_ms == 20.0
    by_account = await ledger.summary(UsageGrouping.ACCOUNT, 3600)
    assert [(g.name, g.requests) for g in by_account] == [("acct-a", 2), ("acct-b", 1)]
    assert await ledger.today_by_key() == {"alice": (2, 15), "bob": (1, 15)}
    await ledger.close()


async def test_retention_prunes_old_rows_at_open(tmp_path: Path) -> None:
    path = tmp_path / "usage.db"
    ledger = await opened(path)
    ledger.submit([row("old", ts=NOW - 31 * 86400), row("new", ts=NOW - 29 * 86400)])
    await ledger.close()
    again = await opened(path, retention_days=30)
    assert [g.name for g in await again.summary(UsageGrouping.KEY, 40 * 86400)] == ["new"]
    await again.close()


async def test_cli_keys_live_in_the_same_file(tmp_path: Path) -> None:
    path = tmp_path / "usage.db"
    ledger = await opened(path)
    await ledger.add_key("alice", "ab" * 32, KeyLimits(rpm=5, models=["qwen*"]))
    assert await ledger.set_limits("alice", KeyLimits(rpm=5, disabled=True))
    assert not await ledger.set_limits("nobody", KeyLimits())
    await ledger.close()
    again = await opened(path)
    [(entry, created)] = await again.load_keys()
    assert (entry.name, entry.limits.rpm, entry.limits.disabled) == ("alice", 5, True)
    assert created > 0 and await again.remove_key("alice") and await again.load_keys() == []
    with pytest.raises(sqlite3.IntegrityError):
        await again.add_key("x", "cd" * 32, KeyLimits())
        await again.add_key("y", "cd" * 32, KeyLimits())  # the same digest twice
    await again.close()


async def test_a_corrupt_file_refuses_to_open_with_advice(tmp_path: Path) -> None:
    path = tmp_path / "usage.db"
    path.write_bytes(b"this is not a database" * 400)
    ledger = Ledger(str(path))
    with pytest.raises(LedgerOpenError) as info:
        await ledger.open()
    message = str(info.value)
    assert str(path) in message and "corrupt" in message and f"mv {path}" in message
    await ledger.close()


async def test_a_missing_directory_or_a_locked_file_refuses_to_open(tmp_path: Path) -> None:
    with pytest.raises(LedgerOpenError, match="does not exist"):
        await Ledger(str(tmp_path / "nope" / "usage.db")).open()
    path = tmp_path / "usage.db"
    await (await opened(path)).close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # rollback journal mode for this test: readers blocked too
    try:
        ledger = Ledger(str(path))
        with pytest.raises(LedgerOpenError, match="locked"):
            await ledger.open()
        await ledger.close()
    finally:
        holder.execute("ROLLBACK")
        holder.close()


async def test_a_locked_database_degrades_then_recovers_without_losing_rows(
    tmp_path: Path,
) -> None:
    path = tmp_path / "usage.db"
    ledger = await opened(path)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another writer holds the write lock
    ledger.submit([row("alice")] * 5)
    assert not await ledger.commit()
    assert ledger.state is LedgerState.DEGRADED and "locked" in ledger.note
    ledger.submit([row("bob")])
    holder.execute("ROLLBACK")
    holder.close()
    assert await ledger.commit()
    assert ledger.state.value == "ok" and count_rows(path) == 6 and ledger.written == 6
    await ledger.close()


async def test_a_full_disk_degrades_and_rows_wait(tmp_path: Path) -> None:
    path = tmp_path / "usage.db"
    ledger = await opened(path)
    pages = sqlite3.connect(path).execute("PRAGMA page_count").fetchone()[0]
    await ledger._db(lambda c: c.execute(f"PRAGMA max_page_count={pages}"))
    ledger.submit([row("alice", request_id="x" * 2000)] * 50)
    assert not await ledger.commit()
    assert ledger.state is LedgerState.DEGRADED and "full" in ledger.note
    assert ledger.pending == 50
    await ledger._db(lambda c: c.execute("PRAGMA max_page_count=1073741823"))
    assert await ledger.commit() and count_rows(path) == 50
    await ledger.close()


async def test_record_off_keeps_no_rows(tmp_path: Path) -> None:
    ledger = await opened(tmp_path / "usage.db", record=False)
    ledger.submit([row("alice")])
    assert ledger.pending == 0 and ledger.state is LedgerState.OFF
    await ledger.close()
