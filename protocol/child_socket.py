"""Shared by every process: what every child's socket answers, a front's as much as a worker's.

The supervisor pings each child (`Ping` -> `Pong`: alive, and how it is), collects its metrics
(`StatsQuery` -> `Stats`, the child's prometheus registry as `MetricFamily` Structs) and asks it
to stop (`Drain` -> `Ok`); a front pings its workers the same way. A request a child does not
serve gets a `Failure` (protocol/chat.py).
"""

from __future__ import annotations

from protocol.vocabulary import Backend, Base, BinaryState, ChildState, LoginState


class ChildStats(Base, frozen=True, kw_only=True):
    """A child's numbers (a front fills the first four): Pong carries the cheap ones, Stats all."""

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


# --------------------------------------------------------------------------- requests


class Ping(Base, tag_field="type", tag="ping", frozen=True, kw_only=True):
    id: int
    sent_at: float = 0.0


class StatsQuery(Base, tag_field="type", tag="stats_query", frozen=True, kw_only=True):
    id: int


class Drain(Base, tag_field="type", tag="drain", frozen=True, kw_only=True):
    """Stop taking new chats, finish in-flight ones within `grace_s`, then exit."""

    id: int
    grace_s: float = 10.0
    # A replacement already serves (reload): a front stops listening and serves what still
    # arrives on its open connections (closing each) instead of answering 503.
    handover: bool = False


# --------------------------------------------------------------------------- replies


class Pong(Base, tag_field="type", tag="pong", frozen=True, kw_only=True):
    """A child's answer to Ping: who it is and how it is; the rest describes a worker only."""

    id: int
    sent_at: float = 0.0
    name: str  # the account of a worker, `front-<index>` of a front
    state: ChildState
    pid: int
    started_at: float = 0.0
    stats: ChildStats = ChildStats()
    # workers only: the account's login, Lingma binary, models and cooldown
    login: LoginState = LoginState.UNKNOWN
    login_attempt: int = 0  # while LOGGING_IN: the auto-login attempt under way (0: pausing)
    binary_pid: int | None = None
    binary: BinaryState = BinaryState.STOPPED
    cooldown_until: float = 0.0
    models: int = 0
    backend: Backend = Backend.RUNTIME
    note: str = ""  # why the worker is not READY, when it knows (never a secret)


class Stats(Base, tag_field="type", tag="stats", frozen=True, kw_only=True):
    id: int
    name: str  # as in Pong
    stats: ChildStats
    metrics: list[MetricFamily] = []


class Ok(Base, tag_field="type", tag="ok", frozen=True, kw_only=True):
    id: int
    message: str = ""
