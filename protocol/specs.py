"""Shared by supervisor, front and worker: the settings a child process is started with.

Only the supervisor reads the config file; it hands each child its settings as one of these
Structs (supervisor/specs.py builds them), so children never read the config nor import
supervisor code. No field has a default: every value comes from the config (whose schema,
supervisor/config.py, is the one place defaults live), so a spec cannot disagree with it.
"""

from __future__ import annotations

import enum

from protocol.front_socket import WorkerRef
from protocol.keys import KeyEntry
from protocol.vocabulary import Backend, Base


class ChatFlow(enum.StrEnum):
    """Which upstream chat protocol a worker uses (lingma-protocol.md §5.3 vs §5.4)."""

    AUTO = "auto"  # ACP when `session/new` works, else legacy chat/ask
    LEGACY = "legacy"
    ACP = "acp"


class LoginSpec(Base, frozen=True, kw_only=True):
    username: str
    password: str
    auto_login: bool
    headless: bool
    timeout_s: float
    max_retry: int
    retry_pause_s: float  # the first pause between attempts; doubles up to 2 minutes
    executable_path: str
    bundle_b64: str  # "": none configured


class WorkerSpec(Base, frozen=True, kw_only=True):
    name: str
    socket_path: str
    binary: str
    binary_args: list[str]
    binary_env: dict[str, str]
    work_dir: str
    startup_timeout_s: float
    rpc_timeout_s: float
    # Total caps on one chat when its request names no deadline (0 = none): streams run as long
    # as they produce (first_token / silence timeouts catch stalls).
    request_timeout_s: float
    stream_timeout_s: float
    default_model: str
    default_ask_mode: str
    chat_flow: ChatFlow
    image_uri_scheme: str  # ACP image items: lingma:///agent/file?path=... (§5.4)
    setup_timeout_s: float  # session/new + set_model; past it AUTO falls back to legacy
    first_token_timeout_s: float
    silence_timeout_s: float  # over this chat's own pushes, once output flows
    legacy_idle_end_s: float  # legacy: a silence after text this long ends the answer
    acp_connections: int  # shared runtime connections carrying the ACP chats
    model_aliases: dict[str, str]
    session_reuse: bool
    legacy_session_reuse: bool  # legacy chat/ask history per sessionId is undocumented
    session_cache_ttl_s: float
    session_cache_max_entries: int
    max_concurrency: int
    queue_timeout_s: float
    cooldown_s: float
    dedicated_domain_url: str
    login: LoginSpec
    log_level: str
    backend: Backend
    cloud_base_url: str  # "": discovered (lingma-protocol.md §14.2)
    cloud_credential_file: str  # "": decrypt the work dir's cache/user (§14.4)


class FrontSpec(Base, frozen=True, kw_only=True):
    index: int
    host: str
    port: int
    reuse_port: bool
    socket_path: str  # this front's own Unix socket (supervisor pings it there)
    control_socket: str  # the supervisor's control socket (for /metrics and admin routing)
    workers: list[WorkerRef]
    # Named keys (protocol/keys.py): the table at spawn, kept current by KeysUpdate; an empty
    # table means no authentication. The limits table and this front's column in it (see
    # protocol/limits_table.py); usage rows go to the supervisor unless usage_record is off.
    keys: list[KeyEntry]
    limits_table: str
    limits_column: int
    usage_record: bool
    admin_token: str
    metrics_token: str
    metrics_public: bool
    max_in_flight: int
    per_worker_max_in_flight: int
    queue_timeout_s: float
    request_timeout_s: float  # total cap on a non-streamed chat; 0 = none
    stream_timeout_s: float  # total cap on a streamed chat; 0 = none
    max_body_bytes: int
    default_model: str
    model_aliases: dict[str, str]
    ping_interval_s: float
    log_level: str
    access_log: bool
    # Slow or hostile clients: a connection without complete request headers (or idle between
    # requests) is closed after idle_timeout_s; a request body must arrive within body_timeout_s.
    idle_timeout_s: float
    body_timeout_s: float
    # http(s) image URLs in requests: fetched by the front (public addresses only) when true;
    # else only cloud-backend accounts take them (the cloud fetches them itself).
    fetch_image_urls: bool
    image_fetch_timeout_s: float
