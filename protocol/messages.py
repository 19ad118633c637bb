"""Shared by every process: the msgspec Structs for every message on every socket.

Three conversations exist, each with one tagged union per direction:

* front/supervisor -> worker (`WorkerRequest`) and worker -> front/supervisor (`WorkerReply`),
  multiplexed by the integer `id` each request carries;
* supervisor -> front (`FrontRequest`) and front -> supervisor (`FrontReply`);
* operator CLI / front -> supervisor control socket (`ControlRequest` / `ControlReply`),
  each request carrying `api_version`.

The startup specs (`WorkerSpec`, `FrontSpec`) are how the supervisor hands a child process its
settings, so children never read the config file nor import supervisor code.
"""

from __future__ import annotations

import enum
from typing import Any

import msgspec

API_VERSION = 1

# Reserved exit codes (sysexits.h) meaning "restarting will not help": the supervisor marks
# the process FATAL instead of entering a crash loop.
EXIT_CANNOT_START = 78  # EX_CONFIG: the spec or the binary is unusable
EXIT_ACCOUNT_UNUSABLE = 77  # EX_NOPERM: reserved; auto-login failures never exit with it
RESERVED_EXIT_CODES = frozenset({EXIT_CANNOT_START, EXIT_ACCOUNT_UNUSABLE})


class WorkerState(enum.StrEnum):
    STARTING = "starting"
    READY = "ready"
    DEGRADED = "degraded"
    BACKOFF = "backoff"
    STOPPING = "stopping"
    EXITED = "exited"
    FATAL = "fatal"


class BinaryState(enum.StrEnum):
    """Where a worker's Lingma binary is (Pong.binary): reload waits on WAITING_FOR_WORK_DIR."""

    STOPPED = "stopped"
    WAITING_FOR_WORK_DIR = "waiting_for_work_dir"  # the previous binary on the dir still runs
    STARTING = "starting"
    UP = "up"
    BACKOFF = "backoff"
    STOPPING = "stopping"


class LoginState(enum.StrEnum):
    UNKNOWN = "unknown"
    LOGGED_OUT = "logged_out"
    LOGGING_IN = "logging_in"
    LOGGED_IN = "logged_in"
    FAILED = "failed"


class ErrorCode(enum.StrEnum):
    """Stable failure codes; the front maps each to an HTTP status in every API's shape."""

    BAD_REQUEST = "bad_request"  # 400
    UNKNOWN_MODEL = "unknown_model"  # 400 (404 in some APIs)
    NOT_FOUND = "not_found"  # 404: unknown account, session, ...
    NOT_LOGGED_IN = "not_logged_in"  # 503: the account exists but cannot serve yet
    UNAVAILABLE = "unavailable"  # 503: binary down, worker not ready
    OVERLOADED = "overloaded"  # 429: local concurrency limit
    UPSTREAM_RATE_LIMITED = "upstream_rate_limited"  # 429: Lingma said 429
    UPSTREAM_ERROR = "upstream_error"  # 502
    UPSTREAM_TIMEOUT = "upstream_timeout"  # 504: Lingma said 408 or stopped talking
    DEADLINE_EXCEEDED = "deadline_exceeded"  # 504: the request's own deadline passed
    CANCELLED = "cancelled"  # the caller cancelled
    BAD_FRAME = "bad_frame"  # an IPC frame that did not decode
    UNSUPPORTED = "unsupported"  # a request this process does not serve
    INTERNAL = "internal"  # a bug: logged with a traceback, never shown to clients


class FinishReason(enum.StrEnum):
    STOP = "stop"
    LENGTH = "length"
    TOOL_CALLS = "tool_calls"
    CANCELLED = "cancelled"
    CONTENT_FILTER = "content_filter"  # the runtime filtered the answer (chat/answer.isFiltered)


class Backend(enum.StrEnum):
    """How a worker chats (lingma-protocol.md §14): through its runtime, or Lingma's cloud API."""

    RUNTIME = "runtime"  # JSON-RPC chat on the local runtime (flattened prompt, emulated tools)
    CLOUD = "cloud"  # signed HTTP to the cloud (structured turns, native tools, images)


class ChatFlow(enum.StrEnum):
    """Which upstream chat protocol a worker uses (lingma-protocol.md §5.3 vs §5.4)."""

    AUTO = "auto"  # ACP when `session/new` works, else legacy chat/ask
    LEGACY = "legacy"
    ACP = "acp"


class Base(msgspec.Struct, frozen=True, kw_only=True):
    """Common parent so helpers can be typed over 'any message'."""


# --------------------------------------------------------------------------- chat payloads


class Message(Base, frozen=True, kw_only=True):
    """One conversation turn, already flattened to text by the front."""

    role: str  # system | user | assistant | tool
    text: str
    name: str = ""


class ToolSpec(Base, frozen=True, kw_only=True):
    """A client-defined function tool; the front emulates calling it over text."""

    name: str
    description: str = ""
    parameters_json: str = "{}"


class ImageInput(Base, frozen=True, kw_only=True):
    """One image a client sent, checked by the front (only a cloud worker can pass it on)."""

    media_type: str = ""  # image/png, image/jpeg, image/gif, image/webp
    data_b64: str = ""  # inline bytes, standard base64
    url: str = ""  # an http(s) URL the client gave instead of bytes


class PriorToolCall(Base, frozen=True, kw_only=True):
    """A tool call an earlier assistant turn made, sent back to the cloud as it was."""

    call_id: str
    name: str
    arguments_json: str = "{}"


class ChatTurn(Base, frozen=True, kw_only=True):
    """One conversation turn kept structured (cloud backend): roles, tool calls, tool results.

    The runtime backend reads `ChatRequest.messages` (text); the cloud backend reads
    `ChatRequest.turns`, so tool calls and images travel natively instead of as prompt text.
    """

    role: str  # system | user | assistant | tool
    text: str = ""
    name: str = ""
    images: list[ImageInput] = []
    tool_calls: list[PriorToolCall] = []  # assistant turns
    tool_call_id: str = ""  # tool turns: the call this result answers


class Usage(Base, frozen=True, kw_only=True):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class ModelInfo(Base, frozen=True, kw_only=True):
    key: str
    display_name: str = ""
    is_reasoning: bool = False
    is_vl: bool = False
    scenes: list[str] = []


class WorkerStats(Base, frozen=True, kw_only=True):
    """A worker's numbers: Pong carries the cheap ones, Stats all of them."""

    in_flight: int = 0
    queued: int = 0
    requests_total: int = 0
    failures_total: int = 0
    upstream_429_total: int = 0
    session_hits: int = 0
    session_misses: int = 0
    sessions: int = 0
    binary_restarts: int = 0
    prompt_tokens_total: int = 0
    completion_tokens_total: int = 0


class MetricSample(Base, frozen=True, kw_only=True):
    name: str
    labels: dict[str, str]
    value: float


class MetricFamily(Base, frozen=True, kw_only=True):
    """One prometheus-client family as collected in a child, for the supervisor's collector."""

    name: str
    kind: str  # counter | gauge | histogram | summary | untyped
    help: str
    samples: list[MetricSample]


# --------------------------------------------------------------------------- front -> worker


class ChatRequest(Base, tag_field="type", tag="chat", frozen=True, kw_only=True):
    id: int
    request_id: str  # the client's x-request-id, carried into every log line
    model: str
    messages: list[Message]
    tools: list[ToolSpec] = []
    tool_choice: str = "auto"  # auto | none | required | function name
    max_tokens: int | None = None
    stream: bool = True
    affinity: str = ""
    scope: str = ""  # hashed API key: session-cache entries never cross keys
    deadline: float = 0.0  # wall-clock epoch seconds; 0 = worker default
    # Cloud backend only: the conversation structured (`messages` may then be empty), and the
    # sampling hints the cloud body carries (lingma-protocol.md §14.7).
    turns: list[ChatTurn] = []
    temperature: float | None = None
    reasoning_effort: str = ""


class Cancel(Base, tag_field="type", tag="cancel", frozen=True, kw_only=True):
    id: int


class Ping(Base, tag_field="type", tag="ping", frozen=True, kw_only=True):
    id: int
    sent_at: float = 0.0


class ModelsQuery(Base, tag_field="type", tag="models_query", frozen=True, kw_only=True):
    id: int


class ModelsRawQuery(Base, tag_field="type", tag="models_raw_query", frozen=True, kw_only=True):
    id: int


class StatsQuery(Base, tag_field="type", tag="stats_query", frozen=True, kw_only=True):
    id: int


class LoginStart(Base, tag_field="type", tag="login_start", frozen=True, kw_only=True):
    """Start auto-login (or produce the manual URL when auto-login is off)."""

    id: int


class LoginStatusQuery(Base, tag_field="type", tag="login_status_query", frozen=True, kw_only=True):
    id: int


class SessionExport(Base, tag_field="type", tag="session_export", frozen=True, kw_only=True):
    id: int


class ClearCooldown(Base, tag_field="type", tag="clear_cooldown", frozen=True, kw_only=True):
    id: int


class Drain(Base, tag_field="type", tag="drain", frozen=True, kw_only=True):
    """Stop taking new chats, finish in-flight ones within `grace_s`, then exit."""

    id: int
    grace_s: float = 10.0
    # A replacement already serves (reload): a front stops listening and serves what still
    # arrives on its open connections (closing each) instead of answering 503.
    handover: bool = False


WorkerRequest = (
    ChatRequest
    | Cancel
    | Ping
    | ModelsQuery
    | ModelsRawQuery
    | StatsQuery
    | LoginStart
    | LoginStatusQuery
    | SessionExport
    | ClearCooldown
    | Drain
)

# --------------------------------------------------------------------------- worker -> front


class Delta(Base, tag_field="type", tag="delta", frozen=True, kw_only=True):
    id: int
    text: str


class Reasoning(Base, tag_field="type", tag="reasoning", frozen=True, kw_only=True):
    id: int
    text: str


class ToolCall(Base, tag_field="type", tag="tool_call", frozen=True, kw_only=True):
    """A native tool call: the runtime's (ACP tool_call) or the cloud's (assembled fragments).

    Text-emulated client tools (runtime backend) are parsed by the front instead.
    """

    id: int
    call_id: str
    name: str
    arguments_json: str = "{}"


class Finish(Base, tag_field="type", tag="finish", frozen=True, kw_only=True):
    id: int
    reason: FinishReason = FinishReason.STOP
    usage: Usage = Usage()
    upstream_session: str = ""
    served_by: str = ""
    model: str = ""  # the Lingma model key actually used
    first_token_ms: float | None = None
    total_ms: float = 0.0
    session_reused: bool = False


class Failure(Base, tag_field="type", tag="failure", frozen=True, kw_only=True):
    id: int
    code: ErrorCode
    message: str
    retry_after: float | None = None
    served_by: str = ""
    # Nothing reached the caller and another account may well succeed (an upstream 5xx or a
    # stream cut before any output): the front tries the next worker.
    retryable: bool = False


class Pong(Base, tag_field="type", tag="pong", frozen=True, kw_only=True):
    id: int
    sent_at: float = 0.0
    account: str
    state: WorkerState
    login: LoginState
    pid: int
    binary_pid: int | None = None
    started_at: float = 0.0
    cooldown_until: float = 0.0
    models: int = 0
    stats: WorkerStats = WorkerStats()
    binary: BinaryState = BinaryState.STOPPED
    backend: Backend = Backend.RUNTIME
    note: str = ""  # why the worker is not READY, when it knows (never a secret)


class Models(Base, tag_field="type", tag="models", frozen=True, kw_only=True):
    id: int
    account: str
    models: list[ModelInfo]
    aliases: dict[str, str] = {}


class ModelsRaw(Base, tag_field="type", tag="models_raw", frozen=True, kw_only=True):
    id: int
    account: str
    raw: dict[str, Any]


class Stats(Base, tag_field="type", tag="stats", frozen=True, kw_only=True):
    id: int
    account: str
    stats: WorkerStats
    metrics: list[MetricFamily] = []


class LoginInfo(Base, tag_field="type", tag="login_info", frozen=True, kw_only=True):
    id: int
    account: str
    login: LoginState
    auto_login: str = "idle"  # idle | running | succeeded | failed | disabled
    url: str = ""  # manual login URL for an operator, when one was generated
    message: str = ""
    user: str = ""  # display name of the logged-in user (never a token)


class SessionBundle(Base, tag_field="type", tag="session_bundle", frozen=True, kw_only=True):
    id: int
    account: str
    raw_bytes: int
    bundle_b64: str


class Ok(Base, tag_field="type", tag="ok", frozen=True, kw_only=True):
    id: int
    message: str = ""


WorkerReply = (
    Delta
    | Reasoning
    | ToolCall
    | Finish
    | Failure
    | Pong
    | Models
    | ModelsRaw
    | Stats
    | LoginInfo
    | SessionBundle
    | Ok
)

ChatEvent = Delta | Reasoning | ToolCall | Finish | Failure

# --------------------------------------------------------------------------- supervisor <-> front


class WorkerRef(Base, frozen=True, kw_only=True):
    name: str
    socket_path: str


class WorkersUpdate(Base, tag_field="type", tag="workers_update", frozen=True, kw_only=True):
    """The supervisor's current worker set (after spawn, restart or reload)."""

    id: int
    workers: list[WorkerRef]


FrontRequest = Ping | StatsQuery | WorkersUpdate | Drain
FrontReply = Pong | Stats | Ok | Failure

# --------------------------------------------------------------------------- control socket


class StatusQuery(Base, tag_field="type", tag="status", frozen=True, kw_only=True):
    api_version: int = API_VERSION


class ReloadRequest(Base, tag_field="type", tag="reload", frozen=True, kw_only=True):
    api_version: int = API_VERSION


class RestartWorker(Base, tag_field="type", tag="restart_worker", frozen=True, kw_only=True):
    name: str
    api_version: int = API_VERSION


class LoginRequest(Base, tag_field="type", tag="login", frozen=True, kw_only=True):
    name: str
    api_version: int = API_VERSION


class ExportSessionRequest(Base, tag_field="type", tag="export_session", frozen=True, kw_only=True):
    name: str
    api_version: int = API_VERSION


class StatsRequest(Base, tag_field="type", tag="stats", frozen=True, kw_only=True):
    api_version: int = API_VERSION


class MetricsRequest(Base, tag_field="type", tag="metrics", frozen=True, kw_only=True):
    """Asked by fronts to serve `/metrics` from the supervisor's aggregate."""

    api_version: int = API_VERSION


ControlRequest = (
    StatusQuery
    | ReloadRequest
    | RestartWorker
    | LoginRequest
    | ExportSessionRequest
    | StatsRequest
    | MetricsRequest
)


class WorkerStatus(Base, frozen=True, kw_only=True):
    name: str
    kind: str  # worker | front
    state: WorkerState
    login: LoginState = LoginState.UNKNOWN
    pid: int | None = None
    binary_pid: int | None = None
    uptime_s: float = 0.0
    restarts: int = 0
    generation: int = 0
    in_flight: int = 0
    queued: int = 0
    sessions: int = 0
    rss_bytes: int = 0
    cpu_percent: float = 0.0
    models: int = 0
    cooldown_s: float = 0.0
    last_exit: str = ""
    binary: BinaryState = BinaryState.STOPPED  # where the account's Lingma binary is
    backend: str = ""  # runtime | cloud (workers only)
    note: str = ""  # the worker's own reason for not being READY


class StatusReply(Base, tag_field="type", tag="status_reply", frozen=True, kw_only=True):
    version: str
    pid: int
    uptime_s: float
    listen: str
    workers: list[WorkerStatus]
    fronts: list[WorkerStatus]


class ControlOk(Base, tag_field="type", tag="control_ok", frozen=True, kw_only=True):
    message: str = ""
    data: dict[str, Any] = {}


class ControlError(Base, tag_field="type", tag="control_error", frozen=True, kw_only=True):
    code: ErrorCode
    message: str


class MetricsReply(Base, tag_field="type", tag="metrics_reply", frozen=True, kw_only=True):
    text: str


ControlReply = StatusReply | ControlOk | ControlError | MetricsReply

# --------------------------------------------------------------------------- process specs


class LoginSpec(Base, frozen=True, kw_only=True):
    username: str = ""
    password: str = ""
    auto_login: bool = True
    headless: bool = True
    timeout_s: float = 120.0
    max_retry: int = 2
    executable_path: str = "/usr/bin/chromium"
    session_bundle_b64: str = ""


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
    request_timeout_s: float = 300.0
    default_model: str = "auto"
    default_ask_mode: str = "chat"
    chat_flow: ChatFlow = ChatFlow.AUTO
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
    api_keys: list[str] = []
    admin_token: str = ""
    metrics_token: str = ""
    metrics_public: bool = False
    max_in_flight: int = 256
    per_worker_max_in_flight: int = 64
    queue_timeout_s: float = 10.0
    request_timeout_s: float = 300.0
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
