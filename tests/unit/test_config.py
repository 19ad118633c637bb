"""Unit: the TOML config - defaults, validation messages, env overrides, path resolution."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from protocol.specs import ChatFlow
from protocol.vocabulary import Backend
from supervisor.config import Config, ConfigError, load_config, parse_listen
from supervisor.config_report import config_warnings
from supervisor.specs import front_spec, worker_spec

pytestmark = pytest.mark.unit

MINIMAL = """
[[accounts]]
name = "acct-a"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gw.toml"
    path.write_text(text)
    return path


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> Config:
    return load_config(write(tmp_path, text), environ=env or {})


def error(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text, env)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_minimal_config_gets_documented_defaults(tmp_path: Path) -> None:
    config = load(tmp_path, MINIMAL)
    assert config.server.listen == "127.0.0.1:8080"
    assert (config.host, config.port) == ("127.0.0.1", 8080)
    assert config.server.fronts == 1
    assert config.server.runtime_dir == "/run/lingma-gw"
    assert config.control_socket == "/run/lingma-gw/control.sock"
    assert config.work_dir("acct-a") == "/var/lib/lingma-gw/accounts/acct-a"
    assert config.browser.executable_path == "/usr/bin/chromium"
    assert config.lingma.chat_flow == ChatFlow.AUTO
    assert [a.name for a in config.accounts] == ["acct-a"]


def test_relative_paths_resolve_against_the_config_directory(sock_dir: Path) -> None:
    tmp_path = sock_dir  # short: runtime_dir is limited to 60 characters
    config = load(
        tmp_path,
        '[server]\nruntime_dir = "var/run"\nstate_dir = "./var/state"\n'
        '[lingma]\nbinary = "bin/fake-lingma"\n' + MINIMAL,
    )
    assert config.server.runtime_dir == str(tmp_path / "var" / "run")
    assert config.server.state_dir == str(tmp_path / "var" / "state")
    assert config.lingma.binary == str(tmp_path / "bin" / "fake-lingma")


def test_bare_binary_name_is_found_in_the_venv_first(tmp_path: Path) -> None:
    config = load(tmp_path, '[lingma]\nbinary = "python"\n' + MINIMAL)
    assert config.lingma.binary == os.path.join(os.path.dirname(sys.executable), "python")


def test_unresolvable_binary_is_kept_for_the_worker_to_reject(tmp_path: Path) -> None:
    config = load(tmp_path, '[lingma]\nbinary = "/nonexistent"\n' + MINIMAL)
    assert config.lingma.binary == "/nonexistent"
    assert any("not an executable" in w for w in config_warnings(config))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[server]\nlisten = 8080\n", "server.listen: Expected `str`, got `int`"),
        ("[server]\nlistne = '1'\n", "server: unknown key `listne`"),
        ("[surver]\n", "(top level): unknown key `surver`"),
        ("[server]\nfronts = 0\n", "server.fronts: Expected `int` >= 1"),
        ("[server]\nlog_level = 'loud'\n", "server.log_level: Invalid enum value 'loud'"),
        ("[limits]\nmax_in_flight = -1\n", "limits.max_in_flight: Expected `int` >= 1"),
        ("[lingma]\nchat_flow = 'magic'\n", "lingma.chat_flow: Invalid enum value 'magic'"),
        ("[server]\nlisten = 'localhost'\n", "server.listen: expected HOST:PORT"),
        ("[server]\nlisten = '127.0.0.1:70000'\n", "server.listen: port 70000 is outside"),
    ],
)
def test_errors_name_the_key_path(tmp_path: Path, text: str, expected: str) -> None:
    assert error(tmp_path, text + MINIMAL).startswith(expected)


def test_not_toml_names_the_file(tmp_path: Path) -> None:
    assert "not valid TOML" in error(tmp_path, "[server\n")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "absent.toml", environ={})


def test_account_names_cannot_escape_the_state_dir(tmp_path: Path) -> None:
    for bad in ("../etc", "Acct", "a/b", "", "-lead", "x" * 33):
        message = error(tmp_path, f'[[accounts]]\nname = "{bad}"\n')
        assert message.startswith("accounts[0].name: account names must be")


def test_account_rules(tmp_path: Path) -> None:
    assert error(tmp_path, "").startswith("accounts: at least one")
    assert "duplicate account name 'a'" in error(
        tmp_path, '[[accounts]]\nname = "a"\n[[accounts]]\nname = "a"\n'
    )
    assert error(tmp_path, "[[accounts]]\nusername = 'x'\n").startswith(
        "accounts[0]: missing required key `name`"
    )


def test_cross_field_rules(tmp_path: Path) -> None:
    assert "longer than 60" in error(tmp_path, f'[server]\nruntime_dir = "/{"r" * 70}"\n' + MINIMAL)
    assert "ping_timeout_s" in error(
        tmp_path, "[server]\nping_interval_s = 5.0\nping_timeout_s = 1.0\n" + MINIMAL
    )
    assert "empty strings" in error(tmp_path, '[auth]\napi_keys = [""]\n' + MINIMAL)


def test_reference_gateway_env_vars_override_the_file(tmp_path: Path) -> None:
    env = {
        "API_KEYS": "sk-1, sk-2,",
        "ADMIN_TOKEN": "adm",
        "METRICS_TOKEN": "met",
        "METRICS_PUBLIC": "true",
        "LINGMA_BIN": "/opt/lingma/Lingma",
        "DEDICATED_DOMAIN_URL": "https://lingma.example",
        "LINGMA_WORK_DIR": "/srv/lingma",
        "LINGMA_STARTUP_TIMEOUT": "12.5",
        "LINGMA_RPC_TIMEOUT": "7",
        "DEFAULT_MODEL": "dashscope_qwen3_coder",
        "DEFAULT_ASK_MODE": "agent",
        "AUTO_LOGIN_ENABLED": "0",
        "AUTO_LOGIN_HEADLESS": "no",
        "AUTO_LOGIN_TIMEOUT": "90",
        "AUTO_LOGIN_MAX_RETRY": "5",
        "GATEWAY_MAX_IN_FLIGHT": "33",
        "GATEWAY_QUEUE_TIMEOUT_SEC": "4.5",
        "SESSION_REUSE_ENABLED": "off",
        "SESSION_CACHE_TTL_SEC": "60",
        "SESSION_CACHE_MAX_ENTRIES": "10",
        "LOG_LEVEL": "DEBUG",
        "LINGMA_GW_LISTEN": "0.0.0.0:9000",
        "LINGMA_GW_RUNTIME_DIR": "/tmp/lgw-rt",
    }
    config = load(tmp_path, '[auth]\napi_keys = ["from-file"]\n' + MINIMAL, env)
    assert config.auth.api_keys == ["sk-1", "sk-2"]
    assert (config.auth.admin_token, config.auth.metrics_token) == ("adm", "met")
    assert config.auth.metrics_public is True
    assert config.lingma.binary == "/opt/lingma/Lingma"
    assert config.lingma.dedicated_domain_url == "https://lingma.example"
    assert config.server.state_dir == "/srv/lingma"
    assert (config.lingma.startup_timeout_s, config.lingma.rpc_timeout_s) == (12.5, 7.0)
    assert (config.lingma.default_model, config.lingma.default_ask_mode) == (
        "dashscope_qwen3_coder",
        "agent",
    )
    browser = config.browser
    assert (browser.auto_login, browser.headless) == (False, False)
    assert (browser.login_timeout_s, browser.login_max_retry) == (90.0, 5)
    assert (config.limits.max_in_flight, config.limits.queue_timeout_s) == (33, 4.5)
    sessions = config.sessions
    assert (sessions.reuse, sessions.ttl_s, sessions.max_entries) == (False, 60.0, 10)
    assert config.server.log_level == "debug"
    assert (config.host, config.port) == ("0.0.0.0", 9000)
    assert config.server.runtime_dir == "/tmp/lgw-rt"


def test_empty_env_var_counts_as_unset(tmp_path: Path) -> None:
    config = load(tmp_path, '[auth]\napi_keys = ["from-file"]\n' + MINIMAL, {"API_KEYS": ""})
    assert config.auth.api_keys == ["from-file"]


def test_env_parse_errors_name_the_variable(tmp_path: Path) -> None:
    assert error(tmp_path, MINIMAL, {"METRICS_PUBLIC": "maybe"}).startswith(
        "environment variable METRICS_PUBLIC: expected true/false"
    )
    assert "GATEWAY_MAX_IN_FLIGHT: expected an integer" in error(
        tmp_path, MINIMAL, {"GATEWAY_MAX_IN_FLIGHT": "many"}
    )
    out_of_range = error(tmp_path, MINIMAL, {"GATEWAY_MAX_IN_FLIGHT": "0"})
    assert out_of_range == (
        "limits.max_in_flight: Expected `int` >= 1 "
        "(set by environment variable GATEWAY_MAX_IN_FLIGHT)"
    )


def test_lingma_accounts_json_replaces_the_file_accounts(tmp_path: Path) -> None:
    accounts = [
        {"username": "u1", "password": "p1"},
        {"name": "second", "username": "u2", "password": "p2", "session_bundle": "QUJD"},
    ]
    config = load(tmp_path, MINIMAL, {"LINGMA_ACCOUNTS": json.dumps(accounts)})
    assert [a.name for a in config.accounts] == ["account-1", "second"]
    assert config.accounts[0].username == "u1"
    assert config.accounts[1].session_bundle == "QUJD"
    assert "LINGMA_ACCOUNTS: not valid JSON" in error(tmp_path, MINIMAL, {"LINGMA_ACCOUNTS": "["})
    bad_key = error(tmp_path, MINIMAL, {"LINGMA_ACCOUNTS": '[{"name": "a", "pasword": "x"}]'})
    assert bad_key.startswith("accounts[0]: unknown key `pasword`")
    assert bad_key.endswith("(set by environment variable LINGMA_ACCOUNTS)")


def test_session_bundle_env_goes_to_the_first_account(tmp_path: Path) -> None:
    two = MINIMAL + '[[accounts]]\nname = "acct-b"\n'
    config = load(tmp_path, two, {"LINGMA_SESSION_BUNDLE": "YnVuZGxl"})
    assert [a.session_bundle for a in config.accounts] == ["YnVuZGxl", ""]
    lone = load(tmp_path, "", {"LINGMA_SESSION_BUNDLE": "YnVuZGxl"})
    assert [(a.name, a.session_bundle) for a in lone.accounts] == [("account-1", "YnVuZGxl")]


def test_parse_listen() -> None:
    assert parse_listen("[::1]:8080") == ("::1", 8080)
    assert parse_listen("0.0.0.0:1") == ("0.0.0.0", 1)
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_listen(":8080")


def test_examples_are_valid(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2] / "examples"
    for name in ("demo.toml", "production.toml"):
        config = load_config(root / name, environ={})
        assert config.accounts, name
    demo = load_config(root / "demo.toml", environ={})
    assert [a.name for a in demo.accounts] == ["acct-a", "acct-b"]
    assert demo.auth.api_keys == ["sk-demo"]
    assert demo.server.runtime_dir == str(root.parent / "var" / "run")


def test_backend_per_account_env_and_spec(tmp_path: Path) -> None:
    text = (
        '[lingma]\nbackend = "cloud"\ncloud_base_url = "https://lingma.alibabacloud.com/algo"\n'
        '[[accounts]]\nname = "a"\n'
        '[[accounts]]\nname = "b"\nbackend = "runtime"\n'
        '[[accounts]]\nname = "c"\ncloud_base_url = "https://t.rdc.aliyuncs.com"\n'
        'cloud_credential_file = "cred.json"\n'
    )
    config = load(tmp_path, text)
    a, b, c = (worker_spec(config, account, "") for account in config.accounts)
    assert (a.backend, b.backend, c.backend) == (Backend.CLOUD, Backend.RUNTIME, Backend.CLOUD)
    assert a.cloud_base_url == "https://lingma.alibabacloud.com/algo"
    assert c.cloud_base_url == "https://t.rdc.aliyuncs.com"
    assert c.cloud_credential_file == str(tmp_path / "cred.json")
    assert any("cloud_credential_file" in w for w in config_warnings(config))  # file missing
    env = {"LINGMA_BACKEND": " Cloud ", "LINGMA_CLOUD_BASE_URL": "http://10.0.0.5:8000"}
    from_env = load(tmp_path, MINIMAL, env)
    assert from_env.lingma.backend is Backend.CLOUD
    assert any("plain http" in w for w in config_warnings(from_env))
    assert "expected runtime or cloud" in error(tmp_path, MINIMAL, {"LINGMA_BACKEND": "remote"})
    bad_url = error(tmp_path, '[lingma]\ncloud_base_url = "lingma.alibabacloud.com"\n' + MINIMAL)
    assert bad_url.startswith("lingma.cloud_base_url: expected http(s)://HOST")
    bad_backend = error(tmp_path, '[lingma]\nbackend = "remote"\n' + MINIMAL)
    assert bad_backend.startswith("lingma.backend:")


def test_total_caps_none_for_streams_by_default_and_from_the_environment(tmp_path: Path) -> None:
    limits = load(tmp_path, MINIMAL).limits
    assert (limits.stream_timeout_s, limits.request_timeout_s) == (0.0, 600.0)
    env = {"LINGMA_GW_STREAM_TIMEOUT": "900", "LINGMA_GW_REQUEST_TIMEOUT": "0"}
    config = load(tmp_path, MINIMAL, env)
    assert (config.limits.stream_timeout_s, config.limits.request_timeout_s) == (900.0, 0.0)
    front = front_spec(config, 0, "/tmp/f.sock", [], keys=[], limits_column=0)
    worker = worker_spec(config, config.accounts[0], "/tmp/w.sock")
    assert (front.stream_timeout_s, worker.stream_timeout_s) == (900.0, 900.0)
    negative = error(tmp_path, MINIMAL, {"LINGMA_GW_STREAM_TIMEOUT": "-1"})
    assert negative.startswith("limits.stream_timeout_s") and "LINGMA_GW_STREAM_TIMEOUT" in negative
