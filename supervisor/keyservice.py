"""Runs in the supervisor: named keys, their host-wide limits table, and the usage ledger.

Owns the merged key table every front gets (config `[[keys]]`, then keys made with `lingma-gw
keys add` from the database, then the flat `api_keys` list as `api-key-N`), the shared-memory
limits table in the runtime dir and each front's column in it, and the `Ledger`. Answers the
control requests `KeysRequest`, `UsageReportRequest` and `UsageRequest`, and pushes `KeysUpdate` to
every front whenever the table changes (CLI change, reload), awaiting their answers, so a key
works on every front by the time `lingma-gw keys add` returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import sqlite3
import time
from collections.abc import Callable

import msgspec

from protocol.control_socket import ControlReply, ErrorReply
from protocol.framing import FrameError
from protocol.keys import (
    KEY_NAME_PATTERN,
    SHA256_PATTERN,
    KeyAction,
    KeyEntry,
    KeyInfo,
    KeyLimits,
    KeySource,
    KeysReply,
    KeysRequest,
    KeyState,
    KeysUpdate,
)
from protocol.limits_table import LimitsTable
from protocol.usage import UsageReply, UsageReportRequest, UsageRequest
from protocol.vocabulary import ErrorCode
from supervisor.config import Config
from supervisor.handle import ChildHandle, NotConnected
from supervisor.key_metrics import KeyMetrics
from supervisor.keyconfig import FLAT_KEY_PREFIX, configured_entries
from supervisor.keyslots import KeySlots, SlotsExhausted
from supervisor.ledger import Ledger, LedgerOpenError
from supervisor.specs import LIMITS_FILE

log = logging.getLogger(__name__)

PUSH_TIMEOUT_S = 2.0

FrontsView = Callable[[], list[ChildHandle]]


class KeyStoreError(Exception):
    """The keys or the ledger cannot start: the message says what to fix."""


def limits_table_path(config: Config) -> str:
    return os.path.join(config.server.runtime_dir, LIMITS_FILE)


class KeyService:
    def __init__(self, config: Config, fronts: FrontsView) -> None:
        self._config = config
        self._fronts = fronts
        self.ledger = Ledger(
            config.usage_database,
            record=config.usage.record,
            retention_days=config.usage.retention_days,
        )
        self.limits: LimitsTable | None = None
        self._slots: KeySlots | None = None
        self._db_keys: list[tuple[KeyEntry, float]] = []
        self._table: list[KeyEntry] = []
        self._columns: dict[str, int] = {}  # front socket path -> its column
        self._change_lock = asyncio.Lock()
        self.metrics = KeyMetrics(self.ledger, self._in_flight_by_key)

    # ------------------------------------------------------------------ life cycle

    async def open(self) -> None:
        try:
            self.limits = LimitsTable.create(limits_table_path(self._config))
        except OSError as exc:
            raise KeyStoreError(f"cannot create the key limits table: {exc}") from None
        self._slots = KeySlots(self.limits.rows, self.limits.clear_row)
        try:
            await self.ledger.open()
            self._db_keys = await self.ledger.load_keys()
            today = await self.ledger.today_by_key()
        except LedgerOpenError as exc:
            raise KeyStoreError(str(exc)) from None
        except sqlite3.Error as exc:
            raise KeyStoreError(f"usage database {self.ledger.path}: {exc}") from None
        self._rebuild()
        now = time.time()
        for entry in self._table:
            tokens = today.get(entry.name, (0, 0))[1]
            if tokens:
                self.limits.seed_tokens(entry.slot, now, tokens)

    async def close(self) -> None:
        await self.ledger.close()
        if self.limits is not None:
            self.limits.close()
            self.limits = None

    def reconfigure(self, config: Config) -> None:
        """After a reload: new config keys or flat list; the ledger's file stays as it was."""
        if config.usage_database != self._config.usage_database:
            log.warning("usage.database changes take effect at the next start, not on reload")
        self._config = config
        self._rebuild()

    # ------------------------------------------------------------------ table

    def table(self) -> list[KeyEntry]:
        return list(self._table)

    def _in_flight_by_key(self) -> list[tuple[str, int]]:
        limits = self.limits
        if limits is None:
            return []
        return [(e.name, limits.in_flight(e.slot)) for e in self._table if e.limits.shared]

    def _rebuild(self) -> None:
        entries = configured_entries(self._config.keys, self._config.auth.api_keys)
        taken_names = {e.name for e in entries}
        taken_digests = {e.sha256 for e in entries}
        for entry, _ in self._db_keys:
            if entry.name in taken_names or entry.sha256 in taken_digests:
                log.warning("key %s from the database is shadowed by the config", entry.name)
                continue
            entries.append(entry)
        assert self._slots is not None
        slots = self._slots.assign(e.name for e in entries)
        self._table = [_with_slot(entry, slots[entry.name]) for entry in entries]

    async def push(self) -> None:
        """Send the table to every front; a front not connected gets it at its next spawn."""
        update = self.table()

        async def one(front: ChildHandle) -> None:
            with contextlib.suppress(NotConnected, FrameError, OSError, TimeoutError):
                await front.call(lambda i: KeysUpdate(id=i, keys=update), timeout=PUSH_TIMEOUT_S)

        await asyncio.gather(*(one(front) for front in self._fronts()))

    # ------------------------------------------------------------------ fronts' columns

    def claim_column(self, owner: str) -> int:
        used = set(self._columns.values())
        columns = self.limits.columns if self.limits is not None else 1
        column = next((c for c in range(columns) if c not in used), None)
        if column is None:
            raise RuntimeError("no free column in the key limits table")  # pragma: no cover
        self._columns[owner] = column
        return column

    def release_column(self, owner: str) -> None:
        column = self._columns.pop(owner, None)
        if column is not None and self.limits is not None:
            self.limits.clear_column(column)

    def front_keys(self, owner: str) -> tuple[list[KeyEntry], int]:
        """A front's key table and column at each (re)spawn: its predecessor is gone, so is
        that one's count in the column."""
        column = self._columns[owner]
        if self.limits is not None:
            self.limits.clear_column(column)
        return self.table(), column

    # ------------------------------------------------------------------ control requests

    async def handle(
        self, request: KeysRequest | UsageReportRequest | UsageRequest
    ) -> ControlReply:
        match request:
            case UsageReportRequest(rows=rows):
                self.ledger.submit(rows)
                self.metrics.count(rows)
                return self._usage_reply()
            case UsageRequest(by=by, since_s=since_s):
                try:
                    groups = await self.ledger.summary(by, since_s)
                except (sqlite3.Error, OSError) as exc:
                    return _unavailable(exc)
                reply = self._usage_reply()
                return UsageReply(
                    ledger=reply.ledger, ledger_note=reply.ledger_note, by=by, since_s=since_s,
                    groups=groups,
                )  # fmt: skip
            case KeysRequest(action=KeyAction.LIST):
                return await self._list()
        assert isinstance(request, KeysRequest)
        async with self._change_lock:
            try:
                return await self._change(request)
            except (sqlite3.Error, OSError) as exc:
                return _unavailable(exc)

    def _usage_reply(self) -> UsageReply:
        return UsageReply(ledger=self.ledger.state, ledger_note=self.ledger.note)

    async def _list(self) -> KeysReply:
        try:
            today = await self.ledger.today_by_key()
        except (sqlite3.Error, OSError):
            today = {}
        created = {entry.name: at for entry, at in self._db_keys}
        now = time.time()
        return KeysReply(
            keys=[
                KeyInfo(
                    name=entry.name,
                    source=entry.source,
                    limits=entry.limits,
                    state=_state(entry, now),
                    created_at=created.get(entry.name, 0.0),
                    requests_today=today.get(entry.name, (0, 0))[0],
                    tokens_today=today.get(entry.name, (0, 0))[1],
                )
                for entry in self._table
            ]
        )

    async def _change(self, request: KeysRequest) -> ControlReply:
        name = request.name
        if request.action is KeyAction.ADD:
            refusal = self._refuse_add(request)
            if refusal is not None:
                return refusal
            await self.ledger.add_key(name, request.sha256, request.limits)
            message = f"added key {name}"
        else:
            entry = next((e for e in self._table if e.name == name), None)
            refusal = _refuse_change(request.action, name, entry)
            if refusal is not None or entry is None:
                return refusal or _not_found(name)
            if request.action is KeyAction.REMOVE:
                await self.ledger.remove_key(name)
                message = f"removed key {name}"
            else:
                disabled = request.action is KeyAction.DISABLE
                limits = _replace_disabled(entry, disabled)
                await self.ledger.set_limits(name, limits)
                message = f"{'disabled' if disabled else 'enabled'} key {name}"
        self._db_keys = await self.ledger.load_keys()
        try:
            self._rebuild()
        except SlotsExhausted as exc:
            await self.ledger.remove_key(name)
            self._db_keys = await self.ledger.load_keys()
            return ErrorReply(code=ErrorCode.UNAVAILABLE, message=str(exc))
        await self.push()
        log.info("keys: %s", message)
        if not self._table:
            message += ": no key is left, so /v1/* is now OPEN to anyone who can connect"
        return KeysReply(message=message)

    def _refuse_add(self, request: KeysRequest) -> ErrorReply | None:
        name = request.name
        if not re.fullmatch(KEY_NAME_PATTERN, name) or name.startswith(FLAT_KEY_PREFIX):
            return _bad(
                f"invalid key name {name!r}: 1-64 of A-Z a-z 0-9 _ . @ -, starting with a "
                f"letter or digit, not starting with {FLAT_KEY_PREFIX!r}"
            )
        if not re.fullmatch(SHA256_PATTERN, request.sha256):
            return _bad("the key's digest must be 64 lowercase hex digits")
        existing = next((e for e in self._table if e.name == name), None)
        if existing is not None:
            return ErrorReply(
                code=ErrorCode.BAD_REQUEST,
                message=f"a key named {name!r} exists already ({existing.source.value})",
            )
        if any(e.sha256 == request.sha256 for e in self._table):
            return _bad("that secret is already used by another key")
        return _refuse_limits(request.limits)


def _refuse_limits(limits: KeyLimits) -> ErrorReply | None:
    if min(limits.rpm, limits.tokens_per_day, limits.max_concurrent) < 0:
        return _bad("limits must be 0 (none) or positive")
    if any(not glob.strip() for glob in limits.models):
        return _bad("model globs must not be empty")
    return None


def _with_slot(entry: KeyEntry, slot: int) -> KeyEntry:
    return KeyEntry(
        name=entry.name, sha256=entry.sha256, source=entry.source, slot=slot, limits=entry.limits
    )


def _replace_disabled(entry: KeyEntry, disabled: bool) -> KeyLimits:
    return msgspec.structs.replace(entry.limits, disabled=disabled)


def _state(entry: KeyEntry, now: float) -> KeyState:
    if entry.limits.disabled:
        return KeyState.DISABLED
    if entry.limits.expires_at and now >= entry.limits.expires_at:
        return KeyState.EXPIRED
    return KeyState.ACTIVE


_ELSEWHERE = {
    KeySource.CONFIG: "it is defined in the config file's [[keys]]: {what} there and reload",
    KeySource.API_KEYS: "it comes from [auth] api_keys / API_KEYS: {what} there and reload",
}


def _refuse_change(action: KeyAction, name: str, entry: KeyEntry | None) -> ErrorReply | None:
    if entry is None:
        return _not_found(name)
    if entry.source is KeySource.CLI:
        return None
    what = {
        KeyAction.REMOVE: "delete it",
        KeyAction.DISABLE: "set disabled = true",
        KeyAction.ENABLE: "set disabled = false",
    }.get(action, "change it")
    if entry.source is KeySource.API_KEYS:
        what = "remove it" if action is KeyAction.REMOVE else "move it to a [[keys]] entry"
    reason = _ELSEWHERE[entry.source].format(what=what)
    return _bad(f"key {name!r} cannot be changed with `lingma-gw keys {action.value}`: {reason}")


def _not_found(name: str) -> ErrorReply:
    return ErrorReply(code=ErrorCode.NOT_FOUND, message=f"no key named {name!r}")


def _bad(message: str) -> ErrorReply:
    return ErrorReply(code=ErrorCode.BAD_REQUEST, message=message)


def _unavailable(exc: BaseException) -> ErrorReply:
    return ErrorReply(
        code=ErrorCode.UNAVAILABLE,
        message=f"the usage database cannot be used right now: {type(exc).__name__}: {exc}",
    )
