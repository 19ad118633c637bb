"""Shared by supervisor, front and worker: the settings a child process is started with.

Only the supervisor reads the config file; it hands each child its settings as one of these
Structs (supervisor/specs.py builds them), so children never read the config nor import
supervisor code.
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
    username: str = ""
    password: str = ""
    auto_login: bool = True
    headless: bool = True
    timeout_s: float = 120.0
    max_retry: int = 2
    retry_pause_s: float = 5.0  # the first pause between attempts; doubles up to 2 minutes
    executable_path: str = "/usr/bin/chromium"
    bundle_b64: str = ""


class WorkerSpec(Base, frozen=True, kw_only=True):
    name: str
    socket_path: str
    binary: str
    binary_args: list[str] = []
    binary_env: dict[str, str] = {}
    work_dir: str
    socket_port: int = 0  # 0 = pick a free port
    http_port: int = 0
    startup_timeout_s: float = 30.0
    rpc_timeout_s: float = 60.0
    # Total caps on one chat when its request names no deadline (0 = none): streams run as long
    # as they produce (first_token / silence timeouts catch stalls).
    request_timeout_s: float = 600.0
    stream_timeout_s: float = 0.0
    default_model: str = "auto"
    default_ask_mode: str = "chat"
    chat_flow: ChatFlow = ChatFlow.AUTO
    image_uri_scheme: str = "lingma"  # ACP image items: lingma:///agent/file?path=... (§5.4)
    setup_timeout_s: float = 15.0  # session/new + set_model; past it AUTO falls back to legacy
    first_token_timeout_s: float = 120.0
    silence_timeout_s: float = 60.0  # over this chat's own pushes, once output flows
    legacy_idle_end_s: float = 10.0  # legacy: a silence after text this long ends the answer
    acp_connections: int = 1  # shared runtime connections carrying the ACP chats
    model_aliases: dict[str, str] = {}
    session_reuse: bool = True
    legacy_session_reuse: bool = False  # legacy chat/ask history per sessionId is undocumented
    session_cache_ttl_s: float = 1800.0
    session_cache_max_entries: int = 1000
    max_concurrency: int = 8
    queue_timeout_s: float = 30.0
    cooldown_s: float = 60.0
    dedicated_domain_url: str = ""
    login: LoginSpec = LoginSpec()
    log_level: str = "info"
    backend: Backend = Backend.RUNTIME
    cloud_base_url: str = ""  # "": discovered (lingma-protocol.md §14.2)
    cloud_credential_file: str = ""  # "": decrypt the work dir's cache/user (§14.4)


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
    keys: list[KeyEntry] = []
    limits_table: str = ""
    limits_column: int = 0
    usage_record: bool = True
    admin_token: str = ""
    metrics_token: str = ""
    metrics_public: bool = False
    max_in_flight: int = 256
    per_worker_max_in_flight: int = 64
    queue_timeout_s: float = 10.0
    request_timeout_s: float = 600.0  # total cap on a non-streamed chat; 0 = none
    stream_timeout_s: float = 0.0  # total cap on a streamed chat; 0 = none
    max_body_bytes: int = 8 * 1024 * 1024
    default_model: str = "auto"
    model_aliases: dict[str, str] = {}
    ping_interval_s: float = 1.0
    log_level: str = "info"
    access_log: bool = True
    # Slow or hostile clients: a connection without complete request headers (or idle between
    # requests) is closed after idle_timeout_s; a request body must arrive within body_timeout_s.
    idle_timeout_s: float = 75.0
    body_timeout_s: float = 60.0
    # http(s) image URLs in requests: fetched by the front (public addresses only) when true;
    # else only cloud-backend accounts take them (the cloud fetches them itself).
    fetch_image_urls: bool = False
    image_fetch_timeout_s: float = 10.0
