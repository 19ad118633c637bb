"""Runs in the supervisor: what `check-config` and `serve` say about a valid config.

Warnings for settings that are legal but probably wrong (an open /v1, a missing binary, signed
cloud headers over plain http) and a secret-free summary. Kept apart from `config.py`, which
only decides whether a config is valid.
"""

from __future__ import annotations

import os
from typing import Any

from protocol.vocabulary import Backend
from supervisor.config import AccountConfig, Config


def config_warnings(config: Config) -> list[str]:
    """Things that are legal but probably wrong; `check-config` and `serve` print them."""
    warnings: list[str] = []
    if not config.auth.api_keys and not config.keys:
        warnings.append(
            "auth.api_keys and [[keys]] are empty: /v1/* is open to anyone who can connect "
            "(until a key is added with `lingma-gw keys add`)"
        )
    if not config.auth.admin_token:
        warnings.append("auth.admin_token is empty: the /internal/* admin endpoints answer 403")
    if config.auth.metrics_public:
        warnings.append("auth.metrics_public = true: /metrics needs no credentials")
    for account in config.accounts:
        binary = config.account_binary(account)
        if not (os.path.isabs(binary) and os.access(binary, os.X_OK)):
            warnings.append(f"account {account.name}: binary {binary!r} is not an executable")
        warnings += _cloud_warnings(config, account)
    return warnings


def _cloud_warnings(config: Config, account: AccountConfig) -> list[str]:
    cloud = config.account_backend(account) is Backend.CLOUD
    base_url = config.account_cloud_base_url(account)
    warnings: list[str] = []
    if not cloud and (account.cloud_base_url or account.cloud_credential_file):
        warnings.append(f"account {account.name}: cloud_* keys are unused with backend = runtime")
    if cloud and base_url.startswith("http://") and not _is_loopback_url(base_url):
        warnings.append(
            f"account {account.name}: cloud_base_url {base_url!r} is plain http: the signed "
            "login headers would cross the network unencrypted"
        )
    credential_file = account.cloud_credential_file
    if cloud and credential_file and not os.path.isfile(credential_file):
        warnings.append(
            f"account {account.name}: cloud_credential_file {credential_file!r} does not exist"
        )
    return warnings


def _is_loopback_url(url: str) -> bool:
    host = url.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0].strip("[]")
    return host in ("127.0.0.1", "localhost", "::1")


def describe(config: Config) -> dict[str, Any]:
    """A secret-free summary for `check-config` output."""
    return {
        "listen": config.server.listen,
        "fronts": config.server.fronts,
        "runtime_dir": config.server.runtime_dir,
        "state_dir": config.server.state_dir,
        "accounts": [
            {
                "name": account.name,
                "binary": config.account_binary(account),
                "backend": config.account_backend(account).value,
                "credentials": bool(account.username and account.password),
                "session_bundle": bool(account.session_bundle),
            }
            for account in config.accounts
        ],
        "api_keys": len(config.auth.api_keys),
        "keys": [key.name for key in config.keys],
        "usage_database": config.usage_database,
    }
