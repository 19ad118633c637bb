"""Component: the supervisor's key service on a real database and limits table (no processes).

Merging (config keys shadow CLI keys of the same name, flat keys last), what the CLI may and
may not change, usage reports reaching the ledger and the metrics, and a front's column being
zeroed when its successor is spawned.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest

from protocol.control_socket import ErrorReply
from protocol.keys import KeyAction, KeyLimits, KeySource, KeysReply, KeysRequest, KeyState
from protocol.usage import UsageGrouping, UsageReply, UsageReportRequest, UsageRequest, UsageRow
from protocol.vocabulary import ErrorCode
from supervisor.config import Config, load_config
from supervisor.keyservice import KeyService, KeyStoreError

pytestmark = pytest.mark.component


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def config(root: Path, extra: str = "") -> Config:
    path = root / "gw.toml"
    path.write_text(
        f'[server]\nruntime_dir = "{root}/rt"\nstate_dir = "{root}/st"\n'
        '[auth]\napi_keys = ["sk-flat"]\n'
        f'[[keys]]\nname = "carol"\nsha256 = "{digest("sk-carol")}"\nrpm = 5\n'
        '[[accounts]]\nname = "a"\n' + extra
    )
    (root / "rt").mkdir(exist_ok=True)
    (root / "st").mkdir(exist_ok=True)
    return load_config(path, environ={})


def add(name: str, secret: str, **limits: object) -> KeysRequest:
    return KeysRequest(
        action=KeyAction.ADD,
        name=name,
        sha256=digest(secret),
        limits=KeyLimits(**limits),  # type: ignore[arg-type]
    )


async def test_cli_keys_join_the_table_and_config_keys_stay_the_config_s(sock_dir: Path) -> None:
    service = KeyService(config(sock_dir), lambda: [])
    await service.open()
    try:
        reply = await service.handle(add("alice", "sk-alice", rpm=3, models=["qwen*"]))
        assert isinstance(reply, KeysReply) and reply.message == "added key alice"
        table = {e.name: e for e in service.table()}
        assert [e.name for e in service.table()] == ["carol", "api-key-1", "alice"]
        assert table["alice"].source is KeySource.CLI and table["alice"].limits.rpm == 3
        assert len({e.slot for e in service.table()}) == 3

        for request, needle in (
            (add("alice", "sk-other"), "exists already (cli)"),
            (add("carol", "sk-x"), "exists already (config)"),
            (add("bob", "sk-carol"), "already used by another key"),
            (add("api-key-9", "sk-y"), "invalid key name"),
            (KeysRequest(action=KeyAction.REMOVE, name="carol"), "[[keys]]: delete it there"),
            (KeysRequest(action=KeyAction.DISABLE, name="carol"), "[[keys]]: set disabled = true"),
            (KeysRequest(action=KeyAction.REMOVE, name="api-key-1"), "[auth] api_keys"),
        ):
            refused = await service.handle(request)
            assert isinstance(refused, ErrorReply), request
            assert needle in refused.message and refused.code is ErrorCode.BAD_REQUEST, refused
        missing = await service.handle(KeysRequest(action=KeyAction.ENABLE, name="nobody"))
        assert isinstance(missing, ErrorReply) and missing.code is ErrorCode.NOT_FOUND

        slot = table["alice"].slot
        await service.handle(KeysRequest(action=KeyAction.DISABLE, name="alice"))
        alice = next(e for e in service.table() if e.name == "alice")
        assert alice.limits.disabled and alice.slot == slot  # same row: its counts carry on
        listing = await service.handle(KeysRequest(action=KeyAction.LIST))
        assert isinstance(listing, KeysReply)
        assert {k.name: k.state for k in listing.keys}["alice"] is KeyState.DISABLED
    finally:
        await service.close()

    again = KeyService(config(sock_dir), lambda: [])
    await again.open()  # the CLI key lives in the database
    assert "alice" in {e.name for e in again.table()}
    removed = await again.handle(KeysRequest(action=KeyAction.REMOVE, name="alice"))
    assert isinstance(removed, KeysReply) and "alice" not in {e.name for e in again.table()}
    await again.close()


async def test_a_config_key_shadows_a_cli_key_of_the_same_name(sock_dir: Path) -> None:
    service = KeyService(config(sock_dir), lambda: [])
    await service.open()
    await service.handle(add("dave", "sk-dave"))
    await service.close()
    extra = f'[[keys]]\nname = "dave"\nsha256 = "{digest("sk-dave-config")}"\n'
    shadowed = KeyService(config(sock_dir, extra), lambda: [])
    await shadowed.open()
    dave = [e for e in shadowed.table() if e.name == "dave"]
    assert len(dave) == 1 and dave[0].source is KeySource.CONFIG
    await shadowed.close()


async def test_reports_reach_the_ledger_metrics_and_seed_today_s_tokens(sock_dir: Path) -> None:
    service = KeyService(config(sock_dir), lambda: [])
    await service.open()
    now = time.time()
    rows = [
        UsageRow(ts=now, key="carol", account="a", model="m", api="openai", status=200,
                 prompt_tokens=7, completion_tokens=3),
        UsageRow(ts=now, key="carol", account="a", model="m", api="openai", status=429),
    ]  # fmt: skip
    reply = await service.handle(UsageReportRequest(rows=rows))
    assert isinstance(reply, UsageReply) and reply.ledger.value == "ok"
    summary = await service.handle(UsageRequest(by=UsageGrouping.KEY, since_s=60))
    assert isinstance(summary, UsageReply)
    assert [(g.name, g.requests, g.limited) for g in summary.groups] == [("carol", 2, 1)]
    assert service.metrics.requests[("carol", "429")] == 1
    slot = next(e.slot for e in service.table() if e.name == "carol")
    await service.close()

    again = KeyService(config(sock_dir), lambda: [])
    await again.open()
    assert again.limits is not None and again.limits.tokens_today(slot, time.time()) == 10
    await again.close()


async def test_a_front_s_column_is_zeroed_for_its_successor(sock_dir: Path) -> None:
    service = KeyService(config(sock_dir), lambda: [])
    await service.open()
    column = service.claim_column("front-0.sock")
    assert service.claim_column("front-1.sock") != column
    carol = next(e for e in service.table() if e.name == "carol")
    assert service.limits is not None
    service.limits.admit(carol.slot, column, KeyLimits(max_concurrent=5), 0.0)
    assert service.limits.in_flight(carol.slot) == 1
    keys, successor_column = service.front_keys("front-0.sock")  # the crashed front's successor
    assert successor_column == column and service.limits.in_flight(carol.slot) == 0
    assert [e.name for e in keys] == ["carol", "api-key-1"]
    service.release_column("front-0.sock")
    assert service.claim_column("front-2.sock") == column
    await service.close()


async def test_a_corrupt_database_is_a_clear_start_error(sock_dir: Path) -> None:
    cfg = config(sock_dir)
    (sock_dir / "st" / "usage.db").write_bytes(b"garbage" * 1000)
    service = KeyService(cfg, lambda: [])
    with pytest.raises(KeyStoreError, match="corrupt or not a SQLite database"):
        await service.open()
    await service.close()
