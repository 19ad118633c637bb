"""Runs in the front: which named key a request carries, and whether that key may do it now.

`KeyTable` maps the SHA-256 digest of each configured secret to its `KeyEntry` (pushed by the
supervisor, replaced whole on `KeysUpdate`). A presented key is hashed once and looked up by
digest; the digest found is then confirmed with `hmac.compare_digest`. The dictionary lookup
cannot leak a secret through timing: what it compares is a digest the caller cannot steer
toward a stored one. An empty table means open mode (the reference gateway's rule).

`KeyGate` enforces a key's host-wide limits through the shared table (protocol/limits_table.py):
expired or disabled -> 401, a model outside the key's globs -> 403, tokens per day, max
concurrent and rpm -> 429 with Retry-After. Keys without counted limits never touch the table.
"""

from __future__ import annotations

import fnmatch
import hmac
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from front.auth import presented_key
from front.errors import ApiError, ErrorKind
from protocol.keys import KeyEntry, secret_digest
from protocol.limits_table import Decision, LimitsTable, Verdict

log = logging.getLogger(__name__)

ANONYMOUS = "anonymous"
INVALID_KEY_MESSAGE = (
    "invalid API key: use a key from the gateway's [auth] api_keys (API_KEYS), its [[keys]] "
    "or one made with `lingma-gw keys add`"
)
MISSING_KEY_MESSAGE = "missing API key: send `Authorization: Bearer KEY` or `x-api-key: KEY`"

Clock = Callable[[], float]


class KeyTable:
    def __init__(self, entries: list[KeyEntry]) -> None:
        self._by_digest: dict[str, KeyEntry] = {}
        self.replace(entries)

    def replace(self, entries: list[KeyEntry]) -> None:
        self._by_digest = {entry.sha256: entry for entry in entries}

    @property
    def open(self) -> bool:
        return not self._by_digest

    def __len__(self) -> int:
        return len(self._by_digest)

    def lookup(self, secret: str) -> KeyEntry | None:
        digest = secret_digest(secret)
        entry = self._by_digest.get(digest)
        if entry is None or not hmac.compare_digest(entry.sha256, digest):
            return None
        return entry

    def authenticate(self, headers: Mapping[str, str], now: float) -> KeyEntry | None:
        """The key's entry (None in open mode); 401 for a missing, unknown, disabled or
        expired key. The message names the key only once the caller proved it holds it."""
        if self.open:
            return None
        secret = presented_key(headers)
        if not secret:
            raise ApiError(ErrorKind.UNAUTHORIZED, MISSING_KEY_MESSAGE)
        entry = self.lookup(secret)
        if entry is None:
            raise ApiError(ErrorKind.UNAUTHORIZED, INVALID_KEY_MESSAGE)
        limits = entry.limits
        if limits.disabled:
            raise ApiError(ErrorKind.UNAUTHORIZED, f"API key {entry.name!r} is disabled")
        if limits.expires_at and now >= limits.expires_at:
            when = datetime.fromtimestamp(limits.expires_at, UTC).isoformat(timespec="seconds")
            raise ApiError(ErrorKind.UNAUTHORIZED, f"API key {entry.name!r} expired at {when}")
        return entry


def key_name(entry: KeyEntry | None) -> str:
    return entry.name if entry is not None else ANONYMOUS


def check_model(entry: KeyEntry | None, model: str) -> None:
    """403 when the key is limited to model globs and `model` (as the client named it) is
    outside them."""
    if entry is None or not entry.limits.models:
        return
    if any(fnmatch.fnmatchcase(model, glob) for glob in entry.limits.models):
        return
    allowed = ", ".join(entry.limits.models)
    raise ApiError(
        ErrorKind.FORBIDDEN,
        f"API key {entry.name!r} may not use model {model!r} (allowed: {allowed})",
        param="model",
    )


def allowed_models(entry: KeyEntry | None, names: list[str]) -> list[str]:
    if entry is None or not entry.limits.models:
        return names
    return [n for n in names if any(fnmatch.fnmatchcase(n, g) for g in entry.limits.models)]


@dataclass(frozen=True, slots=True)
class Ticket:
    """A request counted in the shared table: `release` it exactly once."""

    slot: int


_REFUSALS = {
    Verdict.TOKENS_PER_DAY: "has used its {limit} tokens for today (UTC); it resets at midnight",
    Verdict.MAX_CONCURRENT: "already has {limit} requests in flight",
    Verdict.RPM: "is over its limit of {limit} requests per minute",
}


class KeyGate:
    """The front's side of the host-wide limits: one column of the shared table is its own."""

    def __init__(self, table: LimitsTable | None, column: int, clock: Clock = time.time) -> None:
        self._table = table
        self._column = column
        self._clock = clock

    @classmethod
    def attach(cls, path: str, column: int) -> KeyGate:
        if not path:
            return cls(None, column)
        try:
            return cls(LimitsTable.attach(path), column)
        except (OSError, ValueError) as exc:
            # Counting would be per front at best: refuse to pretend limits hold.
            log.error("key limits table %s unusable (%s): keys with limits get 503", path, exc)  # noqa: TRY400
            return cls(None, column)

    def admit(self, entry: KeyEntry | None) -> Ticket | None:
        """Count one request of `entry` against its limits, or raise 429 (503 without table)."""
        if entry is None or not entry.limits.shared:
            return None
        if self._table is None:
            raise ApiError(
                ErrorKind.UNAVAILABLE,
                "this key's limits cannot be checked: the gateway's limits table is missing",
                retry_after=5.0,
            )
        decision = self._table.admit(entry.slot, self._column, entry.limits, self._clock())
        if decision.verdict is not Verdict.ADMITTED:
            raise _refused(entry, decision)
        return Ticket(entry.slot)

    def release(self, ticket: Ticket | None, tokens: int) -> None:
        if ticket is not None and self._table is not None:
            self._table.release(ticket.slot, self._column, tokens, self._clock())

    def close(self) -> None:
        if self._table is not None:
            self._table.close()
            self._table = None


def _refused(entry: KeyEntry, decision: Decision) -> ApiError:
    limits = entry.limits
    limit = {
        Verdict.TOKENS_PER_DAY: limits.tokens_per_day,
        Verdict.MAX_CONCURRENT: limits.max_concurrent,
        Verdict.RPM: limits.rpm,
    }[decision.verdict]
    reason = _REFUSALS[decision.verdict].format(limit=limit)
    return ApiError(
        ErrorKind.KEY_LIMITED,
        f"API key {entry.name!r} {reason}",
        retry_after=max(decision.retry_after, 1.0),
    )
