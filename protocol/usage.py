"""Shared by supervisor, front and CLI: usage-ledger rows and the queries over them.

A front produces one `UsageRow` per chat request (it knows the key, the API, the status, the
tokens, the latency and the account that served it) and sends them in batches to the
supervisor (`UsageReportRequest` on the control socket); the supervisor writes them to SQLite and
answers `UsageRequest` (CLI `lingma-gw usage`, the front's admin endpoint) with totals.
"""

from __future__ import annotations

import enum

from protocol.version import API_VERSION
from protocol.vocabulary import Base


class LedgerState(enum.StrEnum):
    OK = "ok"
    DEGRADED = "degraded"  # writes fail (locked, full, corrupt): rows wait in memory, retried
    OFF = "off"  # [usage] record = false


class UsageGrouping(enum.StrEnum):
    KEY = "key"
    ACCOUNT = "account"
    MODEL = "model"


class UsageRow(Base, array_like=True, frozen=True, kw_only=True):
    """One chat request. array_like: a batch of thousands stays a compact msgpack frame."""

    ts: float  # wall clock at arrival, epoch seconds
    key: str  # key name ("anonymous" when the gateway runs without keys)
    account: str  # the account that served it ("" when none did)
    model: str
    api: str  # openai | responses | anthropic
    status: int  # HTTP status the client got (499: the client went away)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    session_reused: bool = False
    front: int = 0
    request_id: str = ""


class UsageReportRequest(Base, tag_field="type", tag="usage_report", frozen=True, kw_only=True):
    """Front -> supervisor (control socket): a batch of rows; answered with `UsageReply`.

    The wire tag stays `usage_report`: fronts and supervisors of one release talk to each other."""

    rows: list[UsageRow]
    api_version: int = API_VERSION


class UsageRequest(Base, tag_field="type", tag="usage", frozen=True, kw_only=True):
    by: UsageGrouping = UsageGrouping.KEY
    since_s: float = 86400.0  # the last 24 h
    api_version: int = API_VERSION


class UsageGroup(Base, frozen=True, kw_only=True):
    name: str
    requests: int
    errors: int  # status >= 400
    limited: int  # 429 answered by a key limit or admission
    prompt_tokens: int
    completion_tokens: int
    avg_latency_ms: float
    avg_ttft_ms: float | None
    session_reuse_rate: float


class UsageReply(Base, tag_field="type", tag="usage_reply", frozen=True, kw_only=True):
    """Also the reply to `UsageReportRequest`: `ledger` tells the front whether writes succeed."""

    ledger: LedgerState = LedgerState.OK
    ledger_note: str = ""
    by: UsageGrouping = UsageGrouping.KEY
    since_s: float = 0.0
    groups: list[UsageGroup] = []


_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_since(text: str) -> float:
    """'24h', '7d', '90m', '30s', '2w' or plain seconds -> seconds; ValueError otherwise."""
    value = text.strip().lower()
    unit = _UNITS.get(value[-1:]) if value else None
    number = value[:-1] if unit is not None else value
    try:
        seconds = float(number) * (unit or 1.0)
    except ValueError:
        raise ValueError(f"expected a duration like 24h, 7d, 90m or 30s, got {text!r}") from None
    if not 0 < seconds < float("inf"):
        raise ValueError(f"the duration must be positive, got {text!r}")
    return seconds
