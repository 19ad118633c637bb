"""Runs in the supervisor: the reference gateway's environment variables, overlaid on the TOML.

Every variable the earlier single-process gateway read still works and wins over the file, so
an existing `EnvironmentFile` keeps working. Values are parsed here (with the variable's name in
the error); range checks happen afterwards in msgspec, which reports the key path and this
module's record of which variable set it. An empty variable counts as unset, so a blank
`API_KEYS=` line in an env file can never silently switch authentication off.
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


def _csv(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


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


def _lower(value: str) -> str:
    return value.strip().lower()


# variable -> (section, key, parser); names and meanings match the reference gateway's Settings.
ENV_OVERRIDES: dict[str, tuple[str, str, Callable[[str], Any]]] = {
    "API_KEYS": ("auth", "api_keys", _csv),
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
    "LOG_LEVEL": ("server", "log_level", _lower),
    "LINGMA_GW_LISTEN": ("server", "listen", _text),
    "LINGMA_GW_RUNTIME_DIR": ("server", "runtime_dir", _path),
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


def _apply_session_bundle(raw: dict[str, Any], bundle: str) -> None:
    """LINGMA_SESSION_BUNDLE belongs to the first (usually only) account."""
    accounts = raw.setdefault("accounts", [])
    if not isinstance(accounts, list):
        raise EnvConfigError("accounts: expected an array of [[accounts]] tables")
    if not accounts:
        accounts.append({"name": "account-1"})
    if isinstance(accounts[0], dict):
        accounts[0]["session_bundle"] = bundle
