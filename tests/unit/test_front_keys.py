"""Unit: named-key lookup (digests, 401s, expiry, models) and host-wide limits via the table.

The limits table is a real file in tmp_path shared by two `KeyGate`s (two fronts' columns);
time is an injected clock, so rpm buckets, day rollover and Retry-After are exact.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from front.errors import ApiError, ErrorKind
from front.keys import KeyGate, KeyTable, allowed_models, check_model
from protocol.keys import KeyEntry, KeyLimits, KeySource, secret_digest
from protocol.limits_table import DAY_S, LimitsTable, Verdict, gcra

pytestmark = pytest.mark.unit

NOW = 1_800_000_000.0  # a fixed wall clock, 2027-01-15


def entry(name: str, secret: str, slot: int = 0, **limits: object) -> KeyEntry:
    return KeyEntry(
        name=name,
        sha256=secret_digest(secret),
        source=KeySource.CLI,
        slot=slot,
        limits=KeyLimits(**limits),  # type: ignore[arg-type]
    )


def status_of(call: object) -> int:
    with pytest.raises(ApiError) as info:
        call()  # type: ignore[operator]
    return info.value.status


def test_lookup_by_bearer_or_x_api_key() -> None:
    table = KeyTable([entry("alice", "sk-a"), entry("bob", "sk-b", slot=1)])
    assert table.authenticate({"authorization": "Bearer sk-b"}, NOW).name == "bob"  # type: ignore[union-attr]
    assert table.authenticate({"x-api-key": "sk-a"}, NOW).name == "alice"  # type: ignore[union-attr]
    assert table.lookup("sk-c") is None and len(table) == 2


@pytest.mark.parametrize(
    ("headers", "needle"),
    [
        ({}, "missing"),
        ({"authorization": "Bearer nope"}, "invalid"),
        ({"x-api-key": " "}, "missing"),
    ],
)
def test_unknown_or_missing_key_is_401_without_names(headers: dict[str, str], needle: str) -> None:
    table = KeyTable([entry("alice", "sk-a")])
    with pytest.raises(ApiError) as info:
        table.authenticate(headers, NOW)
    assert info.value.status == 401 and needle in info.value.message
    assert "alice" not in info.value.message


def test_disabled_and_expired_keys_are_401_naming_the_key() -> None:
    table = KeyTable(
        [entry("off", "sk-off", disabled=True), entry("old", "sk-old", 1, expires_at=NOW)]
    )
    with pytest.raises(ApiError) as info:
        table.authenticate({"x-api-key": "sk-off"}, NOW)
    assert info.value.status == 401 and "'off' is disabled" in info.value.message
    assert table.authenticate({"x-api-key": "sk-old"}, NOW - 1) is not None
    with pytest.raises(ApiError) as info:
        table.authenticate({"x-api-key": "sk-old"}, NOW)
    assert "'old' expired at 2027-01-15T08:00:00+00:00" in info.value.message


def test_open_mode_and_replacement() -> None:
    table = KeyTable([])
    assert table.open and table.authenticate({}, NOW) is None
    table.replace([entry("alice", "sk-a")])
    assert not table.open and status_of(lambda: table.authenticate({}, NOW)) == 401


def test_model_globs_are_403_in_each_api_shape() -> None:
    limited = entry("alice", "sk-a", models=["qwen*", "auto"])
    check_model(limited, "qwen3-coder")
    check_model(limited, "auto")
    check_model(entry("any", "sk-any"), "gpt-4o")
    check_model(None, "gpt-4o")
    with pytest.raises(ApiError) as info:
        check_model(limited, "gpt-4o")
    assert info.value.kind is ErrorKind.FORBIDDEN and info.value.param == "model"
    assert allowed_models(limited, ["auto", "gpt-4o", "qwen-max"]) == ["auto", "qwen-max"]


def test_gcra_burst_then_steady_rate() -> None:
    tat, now = 0, 0
    admitted = []
    for _ in range(4):
        ok, tat, wait = gcra(tat, now, rpm=3)
        admitted.append((ok, wait))
    assert [ok for ok, _ in admitted] == [True, True, True, False]
    assert admitted[3][1] == pytest.approx(20.0)  # one request refills every 60/3 s
    ok, _, _ = gcra(tat, now + 20_000_000_000, rpm=3)
    assert ok


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def table_path(tmp_path: Path) -> str:
    path = str(tmp_path / "limits.shm")
    LimitsTable.create(path, rows=8, columns=4).close()
    return path


def gates(path: str, clock: Clock) -> tuple[KeyGate, KeyGate]:
    return (
        KeyGate(LimitsTable.attach(path), 0, clock),
        KeyGate(LimitsTable.attach(path), 1, clock),
    )


def test_rpm_holds_across_two_fronts_with_retry_after(table_path: str) -> None:
    clock = Clock(NOW)
    one, two = gates(table_path, clock)
    key = entry("alice", "sk-a", slot=3, rpm=4)
    for gate in (one, two, one, two):
        gate.release(gate.admit(key), 0)
    with pytest.raises(ApiError) as info:
        two.admit(key)
    assert info.value.kind is ErrorKind.KEY_LIMITED and info.value.headers()["Retry-After"] == "15"
    clock.now += 15
    one.release(one.admit(key), 0)


def test_max_concurrent_counts_every_column_and_a_dead_front_is_cleared(table_path: str) -> None:
    clock = Clock(NOW)
    one, two = gates(table_path, clock)
    key = entry("alice", "sk-a", slot=2, max_concurrent=2)
    held = [one.admit(key), two.admit(key)]
    with pytest.raises(ApiError) as info:
        one.admit(key)
    assert "2 requests in flight" in info.value.message
    one.release(held[0], 0)
    again = one.admit(key)
    supervisor = LimitsTable.attach(table_path)
    assert supervisor.in_flight(2) == 2
    supervisor.clear_column(1)  # front two died holding one request
    assert supervisor.in_flight(2) == 1
    one.release(again, 0)
    assert supervisor.in_flight(2) == 0


def test_tokens_per_day_is_checked_before_and_resets_at_utc_midnight(table_path: str) -> None:
    clock = Clock(NOW)
    one, _ = gates(table_path, clock)
    key = entry("alice", "sk-a", slot=1, tokens_per_day=100)
    one.release(one.admit(key), 60)
    one.release(one.admit(key), 60)  # admitted at 60 < 100: may overshoot by its own tokens
    with pytest.raises(ApiError) as info:
        one.admit(key)
    midnight = (NOW // DAY_S + 1) * DAY_S
    assert int(info.value.headers()["Retry-After"]) == int(midnight - NOW)
    clock.now = midnight
    one.release(one.admit(key), 1)
    assert LimitsTable.attach(table_path).tokens_today(1, clock.now) == 1


def test_refused_requests_do_not_count_and_unlimited_keys_skip_the_table(table_path: str) -> None:
    clock = Clock(NOW)
    one, _ = gates(table_path, clock)
    assert one.admit(entry("free", "sk-f", slot=5)) is None
    key = entry("alice", "sk-a", slot=4, rpm=1, max_concurrent=1)
    ticket = one.admit(key)
    assert status_of(lambda: one.admit(key)) == 429  # concurrency: no rpm token spent
    one.release(ticket, 0)
    decision = LimitsTable.attach(table_path).admit(4, 0, key.limits, clock.now)
    assert decision.verdict is Verdict.RPM and decision.retry_after == pytest.approx(60.0)


def test_seeded_tokens_count_and_a_gate_without_table_refuses_limited_keys(
    table_path: str,
) -> None:
    supervisor = LimitsTable.attach(table_path)
    supervisor.seed_tokens(6, NOW, 500)
    one, _ = gates(table_path, Clock(NOW))
    assert status_of(lambda: one.admit(entry("a", "sk-a", slot=6, tokens_per_day=500))) == 429
    orphan = KeyGate.attach("", 0)
    assert status_of(lambda: orphan.admit(entry("a", "sk-a", slot=6, rpm=5))) == 503
    assert orphan.admit(entry("b", "sk-b")) is None


def test_attach_refuses_a_file_that_is_not_a_table(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus"
    bogus.write_bytes(b"\0" * 4096)
    with pytest.raises(ValueError, match="not a lingma-gw key-limits table"):
        LimitsTable.attach(str(bogus))
