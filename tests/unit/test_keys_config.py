"""Unit: `[[keys]]` and `[usage]` in the config (secrets to digests, errors), and key slots."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from protocol.keys import KeySource
from supervisor.config import ConfigError, load_config
from supervisor.keyconfig import configured_entries, parse_expiry
from supervisor.keyslots import KeySlots, SlotsExhausted

pytestmark = pytest.mark.unit

ACCOUNT = '[[accounts]]\nname = "acct-a"\n'
DIGEST = hashlib.sha256(b"sk-alice").hexdigest()


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> object:
    path = tmp_path / "gw.toml"
    path.write_text(ACCOUNT + text)
    return load_config(path, environ=env or {})


def error(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text, env)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_three_ways_to_give_a_secret_end_as_the_same_digest(tmp_path: Path) -> None:
    (tmp_path / "bob.key").write_text("sk-bob\n")
    config = load(
        tmp_path,
        f'[[keys]]\nname = "alice"\nsha256 = "{DIGEST.upper()}"\nrpm = 5\n'
        '[[keys]]\nname = "carol"\nsecret_env = "CAROL_KEY"\nmodels = ["qwen*"]\n'
        '[[keys]]\nname = "bob"\nsecret_file = "bob.key"\nexpires = 2027-01-31\n',
        {"CAROL_KEY": "sk-carol"},
    )
    keys = {k.name: k for k in config.keys}  # type: ignore[attr-defined]
    assert keys["alice"].sha256 == DIGEST and keys["alice"].limits().rpm == 5
    assert keys["carol"].sha256 == hashlib.sha256(b"sk-carol").hexdigest()
    assert keys["bob"].sha256 == hashlib.sha256(b"sk-bob").hexdigest()
    assert keys["bob"].limits().expires_at == parse_expiry("2027-01-31")
    assert "sk-carol" not in repr(config) and "sk-bob" not in repr(config)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('[[keys]]\nname = "a"\n', "keys[0]: give the secret exactly one way"),
        (
            f'[[keys]]\nname = "a"\nsha256 = "{DIGEST}"\nsecret_env = "X"\n',
            "got sha256, secret_env",
        ),
        ('[[keys]]\nname = "a"\nsha256 = "abc"\n', "keys[0].sha256: expected 64 hex digits"),
        ('[[keys]]\nname = "a"\nsecret_env = "NOPE"\n', "NOPE is unset or empty"),
        ('[[keys]]\nname = "a"\nsecret_file = "missing.key"\n', "keys[0].secret_file: cannot read"),
        (f'[[keys]]\nname = "api-key-1"\nsha256 = "{DIGEST}"\n', "kept for the keys of [auth]"),
        (f'[[keys]]\nname = "a"\nsha256 = "{DIGEST}"\nexpires = "soon"\n', "keys[0].expires"),
        (f'[[keys]]\nname = "a b"\nsha256 = "{DIGEST}"\n', "keys[0].name"),
        (f'[[keys]]\nname = "a"\nsha256 = "{DIGEST}"\nrpm = -1\n', "keys[0].rpm"),
        (
            f'[[keys]]\nname = "a"\nsha256 = "{DIGEST}"\n[[keys]]\nname = "a"\nsecret_env = "E"\n',
            "keys[1].name: duplicate key name 'a'",
        ),
        (
            f'[auth]\napi_keys = ["sk-alice"]\n[[keys]]\nname = "a"\nsha256 = "{DIGEST}"\n',
            "keys[0]: this secret is already used",
        ),
        ("[usage]\nretention_days = 0\n", "usage.retention_days"),
        ("[usage]\nkeep = 1\n", "usage: unknown key `keep`"),
    ],
)
def test_bad_keys_name_the_key_path(tmp_path: Path, text: str, needle: str) -> None:
    assert needle in error(tmp_path, text, {"E": "x"})


def test_flat_keys_get_positional_names_after_the_named_ones(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        f'[auth]\napi_keys = ["sk-1", "sk-2"]\n[[keys]]\nname = "alice"\nsha256 = "{DIGEST}"\n',
    )
    entries = configured_entries(config.keys, config.auth.api_keys)  # type: ignore[attr-defined]
    assert [(e.name, e.source) for e in entries] == [
        ("alice", KeySource.CONFIG),
        ("api-key-1", KeySource.API_KEYS),
        ("api-key-2", KeySource.API_KEYS),
    ]


def test_usage_database_defaults_under_the_state_dir(tmp_path: Path) -> None:
    config = load(tmp_path, '[server]\nstate_dir = "st"\n')
    assert config.usage_database == str(tmp_path / "st" / "usage.db")  # type: ignore[attr-defined]
    moved = load(tmp_path, '[usage]\ndatabase = "ledger/u.db"\nrecord = false\n')
    assert moved.usage_database == str(tmp_path / "ledger" / "u.db")  # type: ignore[attr-defined]


def test_expiry_dates_and_date_times() -> None:
    assert parse_expiry("1970-01-02") == 86400.0
    assert parse_expiry("1970-01-01T01:00:00") == 3600.0
    assert parse_expiry("1970-01-01T08:00:00+08:00") == 0.0
    with pytest.raises(ValueError, match="ISO date-time"):
        parse_expiry("tomorrow")


def test_slots_are_stable_per_name_and_reused_only_when_full() -> None:
    cleared: list[int] = []
    slots = KeySlots(3, cleared.append)
    assert slots.assign(["a", "b"]) == {"a": 0, "b": 1}
    assert slots.assign(["b", "c"]) == {"b": 1, "c": 2}  # a retired, keeps row 0
    assert slots.assign(["a", "b", "c"]) == {"a": 0, "b": 1, "c": 2}  # a comes back to its row
    assert slots.assign(["b", "c", "d"]) == {"b": 1, "c": 2, "d": 0} and cleared == [0]
    with pytest.raises(SlotsExhausted):
        slots.assign(["b", "c", "d", "e"])
