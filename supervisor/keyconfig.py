"""Runs in the supervisor (and the CLI): the `[[keys]]` and `[usage]` config, resolved to digests.

A configured key gives its secret one of three ways: `sha256` (the hex digest, so the config
holds no secret at all), `secret_env` (an environment variable of the service, e.g. from its
EnvironmentFile) or `secret_file` (a file, e.g. a systemd credential). Loading turns each into
the digest; the secret itself is never kept, shipped or logged. The flat `[auth] api_keys`
list still works: its keys are named `api-key-1`, `api-key-2`, ... by position.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import msgspec

from protocol.keys import (
    KEY_NAME_PATTERN,
    SHA256_PATTERN,
    KeyEntry,
    KeyLimits,
    KeySource,
    secret_digest,
)

FLAT_KEY_PREFIX = "api-key-"
NonNegativeInt = Annotated[int, msgspec.Meta(ge=0)]


class KeyConfigError(ValueError):
    """One line naming the key path (`keys[2].secret_env: ...`)."""


class KeyConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(pattern=KEY_NAME_PATTERN)]
    sha256: str = ""  # filled from secret_env / secret_file when loaded
    secret_env: str = ""
    secret_file: str = ""
    models: list[str] = []
    rpm: NonNegativeInt = 0
    tokens_per_day: NonNegativeInt = 0
    max_concurrent: NonNegativeInt = 0
    expires: str = ""  # "2026-01-31" (00:00 UTC) or an ISO date-time
    disabled: bool = False

    def limits(self) -> KeyLimits:
        return KeyLimits(
            models=list(self.models),
            rpm=self.rpm,
            tokens_per_day=self.tokens_per_day,
            max_concurrent=self.max_concurrent,
            expires_at=parse_expiry(self.expires) if self.expires else 0.0,
            disabled=self.disabled,
        )


class UsageConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    record: bool = True  # false: no usage rows (named keys and limits still work)
    database: str = ""  # "": <state_dir>/usage.db
    retention_days: Annotated[int, msgspec.Meta(ge=1)] = 30


def parse_expiry(text: str) -> float:
    """'2026-01-31' (midnight UTC starting that day) or an ISO date-time (UTC when no zone)."""
    value = text.strip()
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            moment = dt.datetime.combine(dt.date.fromisoformat(value), dt.time(), dt.UTC)
        else:
            moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"expected a date (2026-01-31) or an ISO date-time (2026-01-31T18:00:00+08:00), "
            f"got {text!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def stringify_dates(raw: dict[str, Any]) -> None:
    """TOML turns an unquoted `expires = 2026-01-31` into a date: accept it as its text."""
    for entry in raw.get("keys", []) if isinstance(raw.get("keys"), list) else []:
        if isinstance(entry, dict) and isinstance(entry.get("expires"), dt.date | dt.time):
            entry["expires"] = entry["expires"].isoformat()


def resolve_keys(keys: list[KeyConfig], base: Path, environ: Mapping[str, str]) -> list[KeyConfig]:
    """Each key with its digest filled in and checked; raises KeyConfigError."""
    resolved = []
    for index, key in enumerate(keys):
        where = f"keys[{index}]"
        digest = _digest_of(key, where, base, environ)
        if key.expires:
            try:
                parse_expiry(key.expires)
            except ValueError as exc:
                raise KeyConfigError(f"{where}.expires: {exc}") from None
        resolved.append(msgspec.structs.replace(key, sha256=digest))
    return resolved


def _digest_of(key: KeyConfig, where: str, base: Path, environ: Mapping[str, str]) -> str:
    given = [name for name in ("sha256", "secret_env", "secret_file") if getattr(key, name)]
    if len(given) != 1:
        raise KeyConfigError(
            f"{where}: give the secret exactly one way: sha256, secret_env or secret_file "
            f"(got {', '.join(given) or 'none'})"
        )
    if key.sha256:
        digest = key.sha256.strip().lower()
        if not re.fullmatch(SHA256_PATTERN, digest):
            raise KeyConfigError(
                f"{where}.sha256: expected 64 hex digits (`printf %s SECRET | sha256sum`)"
            )
        return digest
    if key.secret_env:
        secret = environ.get(key.secret_env, "").strip()
        if not secret:
            raise KeyConfigError(
                f"{where}.secret_env: environment variable {key.secret_env} is unset or empty"
            )
        return secret_digest(secret)
    path = base / os.path.expanduser(key.secret_file)
    try:
        secret = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyConfigError(f"{where}.secret_file: cannot read {path}: {exc}") from None
    if not secret:
        raise KeyConfigError(f"{where}.secret_file: {path} is empty")
    return secret_digest(secret)


def check_keys(keys: list[KeyConfig], api_keys: list[str]) -> None:
    """Names unique and not shaped like the flat list's; no secret used twice."""
    names: set[str] = set()
    digests = {secret_digest(secret) for secret in api_keys}
    if len(digests) != len(api_keys):
        raise KeyConfigError("auth.api_keys: the same key is listed twice")
    for index, key in enumerate(keys):
        if key.name.startswith(FLAT_KEY_PREFIX):
            raise KeyConfigError(
                f"keys[{index}].name: names starting with {FLAT_KEY_PREFIX!r} are kept for "
                "the keys of [auth] api_keys"
            )
        if key.name in names:
            raise KeyConfigError(f"keys[{index}].name: duplicate key name {key.name!r}")
        if key.sha256 in digests:
            raise KeyConfigError(f"keys[{index}]: this secret is already used by another key")
        names.add(key.name)
        digests.add(key.sha256)


def configured_entries(keys: list[KeyConfig], api_keys: list[str]) -> list[KeyEntry]:
    """Config keys, then the flat list under generated names; slots are assigned later."""
    entries = [
        KeyEntry(name=k.name, sha256=k.sha256, source=KeySource.CONFIG, slot=-1, limits=k.limits())
        for k in keys
    ]
    entries += [
        KeyEntry(
            name=f"{FLAT_KEY_PREFIX}{position}",
            sha256=secret_digest(secret),
            source=KeySource.API_KEYS,
            slot=-1,
        )
        for position, secret in enumerate(api_keys, start=1)
    ]
    return entries
