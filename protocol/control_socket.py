"""Shared by supervisor, front and the `lingma-gw` CLI: the supervisor's control socket.

One request per connection, each carrying `api_version` (a CLI of another version gets a clear
refusal): `lingma-gw status | reload | restart-worker | login | export-session`, the
fronts' `/metrics`, and the named keys and usage ledger (protocol/keys.py, protocol/usage.py).
Every `...Request` gets one `...Reply`: `StatusReply`, `MetricsReply`, or the generic
`OkReply` (a message and data) and `ErrorReply` (an `ErrorCode` and why).
"""

from __future__ import annotations

from typing import Any

from protocol.keys import KeysReply, KeysRequest
from protocol.usage import LedgerState, UsageReply, UsageReportRequest, UsageRequest
from protocol.version import API_VERSION
from protocol.vocabulary import Base, BinaryState, ChildKind, ChildState, ErrorCode, LoginState


class StatusRequest(Base, tag_field="type", tag="status", frozen=True, kw_only=True):
    api_version: int = API_VERSION


class ReloadRequest(Base, tag_field="type", tag="reload", frozen=True, kw_only=True):
    api_version: int = API_VERSION


class RestartWorkerRequest(Base, tag_field="type", tag="restart_worker", frozen=True, kw_only=True):
    name: str
    api_version: int = API_VERSION


class LoginRequest(Base, tag_field="type", tag="login", frozen=True, kw_only=True):
    name: str
    api_version: int = API_VERSION


class ExportLoginBundleRequest(
    Base, tag_field="type", tag="export_session", frozen=True, kw_only=True
):
    name: str
    api_version: int = API_VERSION


class StatsRequest(Base, tag_field="type", tag="stats", frozen=True, kw_only=True):
    api_version: int = API_VERSION


class MetricsRequest(Base, tag_field="type", tag="metrics", frozen=True, kw_only=True):
    """Asked by fronts to serve `/metrics` from the supervisor's aggregate."""

    api_version: int = API_VERSION


ControlRequest = (
    StatusRequest
    | ReloadRequest
    | RestartWorkerRequest
    | LoginRequest
    | ExportLoginBundleRequest
    | StatsRequest
    | MetricsRequest
    | KeysRequest  # protocol/keys.py: `lingma-gw keys ...`
    | UsageReportRequest  # protocol/usage.py: a front's usage rows
    | UsageRequest  # `lingma-gw usage`, /internal/usage
)

# --------------------------------------------------------------------------- replies


class ChildStatus(Base, frozen=True, kw_only=True):
    name: str
    kind: ChildKind
    state: ChildState
    login: LoginState = LoginState.UNKNOWN
    login_attempt: int = 0  # while logging in: the auto-login attempt under way
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
    workers: list[ChildStatus]
    fronts: list[ChildStatus]
    ledger: LedgerState = LedgerState.OK  # the usage ledger (supervisor/ledger.py)
    ledger_note: str = ""


class OkReply(Base, tag_field="type", tag="control_ok", frozen=True, kw_only=True):
    message: str = ""
    data: dict[str, Any] = {}


class ErrorReply(Base, tag_field="type", tag="control_error", frozen=True, kw_only=True):
    code: ErrorCode
    message: str


class MetricsReply(Base, tag_field="type", tag="metrics_reply", frozen=True, kw_only=True):
    text: str


ControlReply = StatusReply | OkReply | ErrorReply | MetricsReply | KeysReply | UsageReply
