"""Runs in the supervisor: the reference gateway's environment variables, overlaid on the TOML.

Every variable the earlier single-process gateway read (its `Settings`, as used in the seed's
`app/main.py`) either still works and wins over the file, so an existing `EnvironmentFile`
keeps working, or stops the start with a message naming what replaces it: none is silently
ignored. Values are parsed here (with the variable's name in the error); range checks happen
afterwards in msgspec, which reports the key path and this module's record of which variable
set it. An empty variable counts as unset, so a blank `API_KEYS=` line in an env file can never
silently switch authentication off.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from typing import Any


class EnvConfigError(ValueError):
    """Raised for an environment variable that cannot be parsed (message names the variable)."""


def _text(value: str) -> str:
    return value


def _keys(value: str) -> list[str]:
    """Comma-separated, or a JSON list of strings (the reference gateway accepted both)."""
    if not value.lstrip().startswith("["):
        return [item.strip() for item in value.split(",") if item.strip()]
    try:
        keys = json.loads(value)
    except json.JSONDecodeError as exc:
        raise ValueError(f"looks like a JSON list but is not valid JSON ({exc})") from None
    if not isinstance(keys, list) or not all(isinstance(key, str) for key in keys):
        raise ValueError("expected a JSON list of strings, or comma-separated keys")
    return [key.strip() for key in keys if key.strip()]


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError("expected true/false (also 1/0, yes/no, on/off)")


def _int(value: str) -> int:
    try:
        return int(value.strip())
    except ValueError:
        raise ValueError("expected an integer") from None


def _float(value: str) -> float:
    try:
        return float(value.strip())
    except ValueError:
        raise ValueError("expected a number") from None


def _path(value: str) -> str:
    # The shell's cwd, not the config file's directory, is what a relative env path means.
    return os.path.abspath(os.path.expanduser(value))


# Python's level names and their aliases, as the reference gateway's logging setup took them.
_LOG_LEVELS = {
    "debug": "debug",
    "info": "info",
    "warn": "warning",
    "warning": "warning",
    "error": "error",
    "critical": "critical",
    "fatal": "critical",
}


def _log_level(value: str) -> str:
    level = _LOG_LEVELS.get(value.strip().lower())
    if level is None:
        raise ValueError("expected DEBUG, INFO, WARNING (or WARN), ERROR, CRITICAL (or FATAL)")
    return level


def _backend(value: str) -> str:
    backend = value.strip().lower()
    if backend not in ("runtime", "cloud"):
        raise ValueError("expected runtime or cloud")
    return backend


def _positive_int(value: str) -> int:
    number = _int(value)
    if number < 1:
        raise ValueError("expected an integer of at least 1")
    return number


# variable -> (section, key, parser); names and meanings match the reference gateway's Settings.
ENV_OVERRIDES: dict[str, tuple[str, str, Callable[[str], Any]]] = {
    "API_KEYS": ("auth", "api_keys", _keys),
    "ADMIN_TOKEN": ("auth", "admin_token", _text),
    "METRICS_TOKEN": ("auth", "metrics_token", _text),
    "METRICS_PUBLIC": ("auth", "metrics_public", _bool),
    "LINGMA_BIN": ("lingma", "binary", _text),
    "DEDICATED_DOMAIN_URL": ("lingma", "dedicated_domain_url", _text),
    "LINGMA_WORK_DIR": ("server", "state_dir", _path),
    "LINGMA_STARTUP_TIMEOUT": ("lingma", "startup_timeout_s", _float),
    "LINGMA_RPC_TIMEOUT": ("lingma", "rpc_timeout_s", _float),
    "DEFAULT_MODEL": ("lingma", "default_model", _text),
    "DEFAULT_ASK_MODE": ("lingma", "default_ask_mode", _text),
    "AUTO_LOGIN_ENABLED": ("browser", "auto_login", _bool),
    "AUTO_LOGIN_HEADLESS": ("browser", "headless", _bool),
    "AUTO_LOGIN_TIMEOUT": ("browser", "login_timeout_s", _float),
    "AUTO_LOGIN_MAX_RETRY": ("browser", "login_max_retry", _int),
    "GATEWAY_MAX_IN_FLIGHT": ("limits", "max_in_flight", _int),
    "GATEWAY_QUEUE_TIMEOUT_SEC": ("limits", "queue_timeout_s", _float),
    "SESSION_REUSE_ENABLED": ("sessions", "reuse", _bool),
    "SESSION_CACHE_TTL_SEC": ("sessions", "ttl_s", _float),
    "SESSION_CACHE_MAX_ENTRIES": ("sessions", "max_entries", _int),
    "LOG_LEVEL": ("server", "log_level", _log_level),
    "LINGMA_GW_LISTEN": ("server", "listen", _text),
    "LINGMA_GW_RUNTIME_DIR": ("server", "runtime_dir", _path),
    "LINGMA_BACKEND": ("lingma", "backend", _backend),
    "LINGMA_CLOUD_BASE_URL": ("lingma", "cloud_base_url", _text),
    "LINGMA_GW_REQUEST_TIMEOUT": ("limits", "request_timeout_s", _float),
    "LINGMA_GW_STREAM_TIMEOUT": ("limits", "stream_timeout_s", _float),
}

# Variables that build the account list (see apply_env_overrides for their order).
ACCOUNT_VARIABLES = ("LINGMA_ACCOUNTS", "INSTANCE_COUNT", "LINGMA_SESSION_BUNDLE")

# Variables of the reference gateway whose job lingma-gw does differently: setting one stops the
# start with this message, so nobody believes it still does something.
REPLACED_VARIABLES: dict[str, str] = {
    "LINGMA_SOCKET_PORT": (
        "each account's Lingma binary gets its own free socket port, chosen by its worker and "
        "found through the binary's .info.json (lingma-protocol.md §1), so several accounts and "
        "a reload's overlapping replacement never collide on one fixed port; remove the variable"
    ),
}

# Variables holding secrets: the supervisor removes them from its own environment once the
# config is loaded, so fronts, workers and Lingma binaries never inherit them.
SECRET_VARIABLES = (
    "API_KEYS",
    "ADMIN_TOKEN",
    "METRICS_TOKEN",
    "LINGMA_ACCOUNTS",
    "LINGMA_SESSION_BUNDLE",
)


def apply_env_overrides(raw: dict[str, Any], environ: Mapping[str, str]) -> dict[str, str]:
    """Overlay `environ` on the parsed TOML in place; returns {key path: variable name}."""
    for variable, replacement in REPLACED_VARIABLES.items():
        if environ.get(variable, ""):
            raise EnvConfigError(f"environment variable {variable} is not used: {replacement}")
    sources: dict[str, str] = {}
    for variable, (section, key, parse) in ENV_OVERRIDES.items():
        value = environ.get(variable, "")
        if not value:
            continue
        try:
            parsed = parse(value)
        except ValueError as exc:
            raise EnvConfigError(f"environment variable {variable}: {exc}") from None
        _section(raw, section)[key] = parsed
        sources[f"{section}.{key}"] = variable
    accounts_json = environ.get("LINGMA_ACCOUNTS", "")
    if accounts_json:
        raw["accounts"] = _accounts_from_json(accounts_json)
        sources["accounts"] = "LINGMA_ACCOUNTS"
    instance_count = environ.get("INSTANCE_COUNT", "")
    if instance_count:
        _apply_instance_count(raw, instance_count)
        sources.setdefault("accounts", "INSTANCE_COUNT")
    bundle = environ.get("LINGMA_SESSION_BUNDLE", "")
    if bundle:
        _apply_session_bundle(raw, bundle)
        sources.setdefault("accounts", "LINGMA_SESSION_BUNDLE")
    return sources


def _section(raw: dict[str, Any], name: str) -> dict[str, Any]:
    section = raw.setdefault(name, {})
    if not isinstance(section, dict):
        raise EnvConfigError(f"{name}: expected a [{name}] table")
    return section


def _accounts_from_json(text: str) -> list[Any]:
    """LINGMA_ACCOUNTS: a JSON list of {name?, username, password, session_bundle?}."""
    try:
        accounts = json.loads(text)
    except json.JSONDecodeError as exc:
        raise EnvConfigError(
            f"environment variable LINGMA_ACCOUNTS: not valid JSON ({exc})"
        ) from None
    if not isinstance(accounts, list):
        raise EnvConfigError("environment variable LINGMA_ACCOUNTS: expected a JSON list")
    for index, account in enumerate(accounts):
        if isinstance(account, dict):
            account.setdefault("name", f"account-{index + 1}")
    return accounts


def _apply_instance_count(raw: dict[str, Any], text: str) -> None:
    """INSTANCE_COUNT=N: N accounts, as the reference gateway ran N Lingma instances.

    The accounts configured (file or LINGMA_ACCOUNTS) come first; `account-<i>` entries fill
    up to N. Each shares the [lingma] binary settings and gets its own work dir
    (`<state_dir>/accounts/<name>`); those without credentials are logged in by hand
    (`lingma-gw login NAME`) or from a session bundle. More accounts than N is an error: which
    ones to drop is not ours to guess.
    """
    try:
        count = _positive_int(text)
    except ValueError as exc:
        raise EnvConfigError(f"environment variable INSTANCE_COUNT: {exc}") from None
    accounts = raw.setdefault("accounts", [])
    if not isinstance(accounts, list):
        raise EnvConfigError("accounts: expected an array of [[accounts]] tables")
    if len(accounts) > count:
        raise EnvConfigError(
            f"environment variable INSTANCE_COUNT={count}: {len(accounts)} accounts are "
            "configured ([[accounts]] or LINGMA_ACCOUNTS), and lingma-gw runs one worker per "
            "account; remove INSTANCE_COUNT, or list exactly the accounts to run"
        )
    taken = {account.get("name") for account in accounts if isinstance(account, dict)}
    index = 0
    while len(accounts) < count:
        index += 1
        name = f"account-{index}"
        if name not in taken:
            accounts.append({"name": name})


def _apply_session_bundle(raw: dict[str, Any], bundle: str) -> None:
    """LINGMA_SESSION_BUNDLE belongs to the first (usually only) account."""
    accounts = raw.setdefault("accounts", [])
    if not isinstance(accounts, list):
        raise EnvConfigError("accounts: expected an array of [[accounts]] tables")
    if not accounts:
        accounts.append({"name": "account-1"})
    if isinstance(accounts[0], dict):
        accounts[0]["session_bundle"] = bundle
