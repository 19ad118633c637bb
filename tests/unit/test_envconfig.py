"""Unit: every variable of the reference gateway is honoured or refused, never ignored."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from supervisor.config import Config, ConfigError, load_config
from supervisor.envconfig import ACCOUNT_VARIABLES, ENV_OVERRIDES, REPLACED_VARIABLES
from supervisor.specs import worker_specs
from tests.helpers import REPO

pytestmark = pytest.mark.unit

# The reference gateway's settings, as its app/main.py reads them (`settings.<name>`, in the
# seed beside DESIGN.md), under their environment names; LINGMA_SESSION_BUNDLE is named in its
# session-export docstring.
REFERENCE_VARIABLES = (
    "LINGMA_ACCOUNTS",
    "ADMIN_TOKEN",
    "API_KEYS",
    "AUTO_LOGIN_ENABLED",
    "AUTO_LOGIN_HEADLESS",
    "AUTO_LOGIN_MAX_RETRY",
    "AUTO_LOGIN_TIMEOUT",
    "DEDICATED_DOMAIN_URL",
    "DEFAULT_ASK_MODE",
    "DEFAULT_MODEL",
    "GATEWAY_MAX_IN_FLIGHT",
    "GATEWAY_QUEUE_TIMEOUT_SEC",
    "INSTANCE_COUNT",
    "LINGMA_BIN",
    "LINGMA_RPC_TIMEOUT",
    "LINGMA_SOCKET_PORT",
    "LINGMA_STARTUP_TIMEOUT",
    "LINGMA_WORK_DIR",
    "LOG_LEVEL",
    "METRICS_PUBLIC",
    "METRICS_TOKEN",
    "SESSION_CACHE_MAX_ENTRIES",
    "SESSION_CACHE_TTL_SEC",
    "SESSION_REUSE_ENABLED",
    "LINGMA_SESSION_BUNDLE",
)
ONE_ACCOUNT = '[[accounts]]\nname = "acct-a"\n'


def load(tmp_path: Path, env: dict[str, str], text: str = ONE_ACCOUNT) -> Config:
    path = tmp_path / "gw.toml"
    path.write_text(text)
    return load_config(path, environ=env)


def error(tmp_path: Path, env: dict[str, str], text: str = ONE_ACCOUNT) -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, env, text)
    return str(info.value)


@pytest.mark.parametrize("variable", REFERENCE_VARIABLES)
def test_every_reference_variable_is_honoured_or_refused(variable: str) -> None:
    honoured = variable in ENV_OVERRIDES or variable in ACCOUNT_VARIABLES
    assert honoured != (variable in REPLACED_VARIABLES)


@pytest.mark.parametrize("variable", REFERENCE_VARIABLES)
def test_migrating_doc_maps_every_reference_variable(variable: str) -> None:
    assert f"| `{variable}` |" in (REPO / "docs" / "migrating.md").read_text()


def test_a_replaced_variable_stops_the_start_naming_what_replaces_it(tmp_path: Path) -> None:
    message = error(tmp_path, {"LINGMA_SOCKET_PORT": "37010"})
    assert message.startswith("environment variable LINGMA_SOCKET_PORT is not used:")
    assert ".info.json" in message and "remove the variable" in message
    assert load(tmp_path, {"LINGMA_SOCKET_PORT": ""}).accounts  # empty counts as unset


def test_api_keys_take_a_json_list_or_commas(tmp_path: Path) -> None:
    as_json = load(tmp_path, {"API_KEYS": json.dumps(["sk-1", " sk-2 ", ""])})
    assert as_json.auth.api_keys == ["sk-1", "sk-2"]
    assert load(tmp_path, {"API_KEYS": "sk-1,sk-2"}).auth.api_keys == ["sk-1", "sk-2"]
    assert "API_KEYS: looks like a JSON list" in error(tmp_path, {"API_KEYS": '["sk-1"'})
    assert "API_KEYS: expected a JSON list of strings" in error(tmp_path, {"API_KEYS": "[1, 2]"})


@pytest.mark.parametrize(
    ("value", "level"),
    [
        ("WARN", "warning"),
        ("warn", "warning"),
        ("Warning", "warning"),
        ("CRITICAL", "critical"),
        ("FATAL", "critical"),
        ("fatal", "critical"),
        ("Debug", "debug"),
        (" ERROR ", "error"),
    ],
)
def test_log_level_takes_python_names_and_aliases_in_any_case(
    tmp_path: Path, value: str, level: str
) -> None:
    assert load(tmp_path, {"LOG_LEVEL": value}).server.log_level == level


def test_an_unknown_log_level_names_the_choices(tmp_path: Path) -> None:
    assert "LOG_LEVEL: expected DEBUG, INFO, WARNING (or WARN)" in error(
        tmp_path, {"LOG_LEVEL": "loud"}
    )


def test_instance_count_makes_that_many_accounts_with_their_own_work_dirs(
    tmp_path: Path,
) -> None:
    config = load(tmp_path, {"INSTANCE_COUNT": "3", "LINGMA_BIN": "/opt/Lingma"}, text="")
    assert [a.name for a in config.accounts] == ["account-1", "account-2", "account-3"]
    specs = worker_specs(config)
    assert {spec.binary for spec in specs.values()} == {"/opt/Lingma"}
    assert len({spec.work_dir for spec in specs.values()}) == 3


def test_instance_count_fills_up_after_the_configured_accounts(tmp_path: Path) -> None:
    accounts = json.dumps([{"username": "u", "password": "p"}])
    config = load(tmp_path, {"LINGMA_ACCOUNTS": accounts, "INSTANCE_COUNT": "2"})
    assert [(a.name, a.username) for a in config.accounts] == [
        ("account-1", "u"),
        ("account-2", ""),
    ]
    bundle = load(tmp_path, {"INSTANCE_COUNT": "2", "LINGMA_SESSION_BUNDLE": "YnVu"}, text="")
    assert [a.session_bundle for a in bundle.accounts] == ["YnVu", ""]


def test_instance_count_below_the_configured_accounts_is_refused(tmp_path: Path) -> None:
    two = ONE_ACCOUNT + '[[accounts]]\nname = "acct-b"\n'
    message = error(tmp_path, {"INSTANCE_COUNT": "1"}, text=two)
    assert message.startswith("environment variable INSTANCE_COUNT=1: 2 accounts are configured")
    assert "INSTANCE_COUNT: expected an integer of at least 1" in error(
        tmp_path, {"INSTANCE_COUNT": "0"}
    )
