"""Runs in the supervisor: turns the config into the spec Struct each child is started with.

Children never read the config; everything a front or worker needs (paths, limits, secrets)
travels in its `FrontSpec` / `WorkerSpec`. `spec_changed` decides on reload whether a running
child can keep going or must be replaced.
"""

from __future__ import annotations

import os

import msgspec

from protocol.front_socket import WorkerRef
from protocol.keys import KeyEntry
from protocol.specs import FrontSpec, LoginSpec, WorkerSpec
from supervisor.config import AccountConfig, Config

LIMITS_FILE = "key-limits.shm"  # the host-wide key limits table (protocol/limits_table.py)


def worker_socket_path(config: Config, name: str, serial: int = 0) -> str:
    suffix = f".{serial}" if serial else ""
    return os.path.join(config.server.runtime_dir, f"worker-{name}{suffix}.sock")


def front_socket_path(config: Config, index: int, serial: int = 0) -> str:
    suffix = f".{serial}" if serial else ""
    return os.path.join(config.server.runtime_dir, f"front-{index}{suffix}.sock")


def worker_spec(config: Config, account: AccountConfig, socket_path: str) -> WorkerSpec:
    lingma, browser, sessions = config.lingma, config.browser, config.sessions
    auto_login = browser.auto_login if account.auto_login is None else account.auto_login
    return WorkerSpec(
        name=account.name,
        socket_path=socket_path,
        binary=config.account_binary(account),
        binary_args=list(
            lingma.binary_args if account.binary_args is None else account.binary_args
        ),
        binary_env={**lingma.env, **account.env},
        work_dir=config.work_dir(account.name),
        startup_timeout_s=lingma.startup_timeout_s,
        rpc_timeout_s=lingma.rpc_timeout_s,
        request_timeout_s=config.limits.request_timeout_s,
        stream_timeout_s=config.limits.stream_timeout_s,
        default_model=lingma.default_model,
        default_ask_mode=lingma.default_ask_mode,
        chat_flow=lingma.chat_flow,
        image_uri_scheme=lingma.image_uri_scheme,
        setup_timeout_s=lingma.setup_timeout_s,
        first_token_timeout_s=lingma.first_token_timeout_s,
        silence_timeout_s=lingma.silence_timeout_s,
        legacy_idle_end_s=lingma.legacy_idle_end_s,
        acp_connections=lingma.acp_connections,
        model_aliases=dict(config.models.aliases),
        session_reuse=sessions.reuse,
        legacy_session_reuse=sessions.legacy_reuse,
        session_cache_ttl_s=sessions.ttl_s,
        session_cache_max_entries=sessions.max_entries,
        max_concurrency=account.max_concurrency,
        queue_timeout_s=config.limits.queue_timeout_s,
        cooldown_s=lingma.cooldown_s,
        dedicated_domain_url=lingma.dedicated_domain_url,
        login=LoginSpec(
            username=account.username,
            password=account.password,
            auto_login=auto_login,
            headless=browser.headless,
            timeout_s=browser.login_timeout_s,
            max_retry=browser.login_max_retry,
            retry_pause_s=browser.login_retry_pause_s,
            executable_path=browser.executable_path,
            bundle_b64=account.session_bundle,
        ),
        log_level=config.server.log_level,
        backend=config.account_backend(account),
        cloud_base_url=config.account_cloud_base_url(account),
        cloud_credential_file=account.cloud_credential_file,
    )


def front_spec(
    config: Config,
    index: int,
    socket_path: str,
    workers: list[WorkerRef],
    *,
    keys: list[KeyEntry],
    limits_column: int,
) -> FrontSpec:
    """A front's settings; `keys` and `limits_column` come from the key service at each spawn."""
    auth, limits = config.auth, config.limits
    return FrontSpec(
        index=index,
        host=config.host,
        port=config.port,
        # Always on: a replacement front (reload with new keys or limits) binds the port
        # before the old one stops listening, so the port never closes.
        reuse_port=True,
        socket_path=socket_path,
        control_socket=config.control_socket,
        workers=workers,
        keys=keys,
        limits_column=limits_column,
        usage_record=config.usage.record,
        limits_table=os.path.join(config.server.runtime_dir, LIMITS_FILE),
        admin_token=auth.admin_token,
        metrics_token=auth.metrics_token,
        metrics_public=auth.metrics_public,
        max_in_flight=limits.max_in_flight,
        per_worker_max_in_flight=limits.per_worker_max_in_flight,
        queue_timeout_s=limits.queue_timeout_s,
        request_timeout_s=limits.request_timeout_s,
        stream_timeout_s=limits.stream_timeout_s,
        max_body_bytes=limits.max_body_bytes,
        idle_timeout_s=limits.idle_timeout_s,
        body_timeout_s=limits.body_timeout_s,
        fetch_image_urls=limits.fetch_image_urls,
        image_fetch_timeout_s=limits.image_fetch_timeout_s,
        default_model=config.lingma.default_model,
        model_aliases=dict(config.models.aliases),
        ping_interval_s=config.server.ping_interval_s,
        log_level=config.server.log_level,
        access_log=config.server.access_log,
    )


def worker_specs(config: Config) -> dict[str, WorkerSpec]:
    """Every account's spec with a placeholder socket path, for comparing two configs."""
    return {account.name: worker_spec(config, account, "") for account in config.accounts}


def spec_changed(old: msgspec.Struct, new: msgspec.Struct) -> bool:
    """True when a child started with `old` must be replaced to run with `new`.

    Socket paths, the front's initial worker list, key table and limits column are where the
    supervisor put things, not settings: WorkersUpdate and KeysUpdate keep a front current.
    """
    ignore: dict[str, object] = {"socket_path": "", "workers": [], "keys": [], "limits_column": 0}
    old_fields = {**msgspec.structs.asdict(old), **_present(old, ignore)}
    new_fields = {**msgspec.structs.asdict(new), **_present(new, ignore)}
    return old_fields != new_fields


def _present(struct: msgspec.Struct, ignore: dict[str, object]) -> dict[str, object]:
    return {key: value for key, value in ignore.items() if key in struct.__struct_fields__}
