"""Shared by every process: the words every conversation uses — states, error and exit codes.

A leaf of the leaf: the message modules (chat, child_socket, worker_socket, front_socket,
control_socket, specs) import this one and nothing else of ours but each other.
"""

from __future__ import annotations

import enum

import msgspec

# Reserved exit codes (sysexits.h) meaning "restarting will not help": the supervisor marks
# the process FATAL instead of entering a crash loop.
EXIT_CANNOT_START = 78  # EX_CONFIG: the spec or the binary is unusable
EXIT_ACCOUNT_UNUSABLE = 77  # EX_NOPERM: reserved; auto-login failures never exit with it
RESERVED_EXIT_CODES = frozenset({EXIT_CANNOT_START, EXIT_ACCOUNT_UNUSABLE})


class Base(msgspec.Struct, frozen=True, kw_only=True):
    """Common parent so helpers can be typed over 'any message'."""


class ChildKind(enum.StrEnum):
    """The two kinds of child process the supervisor runs."""

    WORKER = "worker"  # one per account
    FRONT = "front"  # the HTTP listeners


class ChildState(enum.StrEnum):
    """Where a supervised child is (supervisor/handle.py); a child's Pong reports its own view."""

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


class Backend(enum.StrEnum):
    """How a worker chats (lingma-protocol.md §14): through its runtime, or Lingma's cloud API."""

    RUNTIME = "runtime"  # JSON-RPC chat on the local runtime (flattened prompt, emulated tools)
    CLOUD = "cloud"  # signed HTTP to the cloud (structured turns, native tools, images)
