"""Shared by supervisor, front and CLI: named API keys as they travel between processes.

Only SHA-256 digests of secrets ever travel: the CLI hashes a new secret before sending it,
the supervisor stores and pushes digests, the front hashes what a client presents and looks
the digest up. The supervisor pushes the whole merged table (config `[[keys]]`, CLI keys from
the database, the flat `api_keys` list under generated names) to every front as `KeysUpdate`,
so `lingma-gw keys add/disable/remove` take effect without a restart.
"""

from __future__ import annotations

import enum
import hashlib

from protocol.version import API_VERSION
from protocol.vocabulary import Base

# Names appear in the ledger, in Prometheus labels and on the command line.
KEY_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$"
SHA256_PATTERN = r"^[0-9a-f]{64}$"


def secret_digest(secret: str) -> str:
    """The hex SHA-256 of a secret, as stored, pushed and compared (never the secret itself)."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


class KeySource(enum.StrEnum):
    CONFIG = "config"  # a [[keys]] entry: change it in the config and reload
    CLI = "cli"  # `lingma-gw keys add`: lives in the database
    API_KEYS = "api_keys"  # the flat [auth] api_keys / API_KEYS list, named api-key-N


class KeyState(enum.StrEnum):
    """What `lingma-gw keys list` says of a key now."""

    ACTIVE = "active"
    DISABLED = "disabled"
    EXPIRED = "expired"


class KeyAction(enum.StrEnum):
    ADD = "add"
    LIST = "list"
    DISABLE = "disable"
    ENABLE = "enable"
    REMOVE = "remove"


class KeyLimits(Base, frozen=True, kw_only=True):
    """What a key may do; 0 / empty means "no limit"."""

    models: list[str] = []  # globs over the model name a client asks for
    rpm: int = 0  # requests per minute (sliding window)
    tokens_per_day: int = 0  # prompt + completion tokens per UTC day
    max_concurrent: int = 0  # requests in flight at once, over every front of the host
    expires_at: float = 0.0  # epoch seconds
    disabled: bool = False

    @property
    def shared(self) -> bool:
        """True when enforcing needs the host-wide table (front/keys.py skips it otherwise)."""
        return bool(self.rpm or self.tokens_per_day or self.max_concurrent)


class KeyEntry(Base, frozen=True, kw_only=True):
    name: str
    sha256: str
    source: KeySource
    slot: int  # this key's row in the host-wide limits table (protocol/limits_table.py)
    limits: KeyLimits = KeyLimits()


class KeysUpdate(Base, tag_field="type", tag="keys_update", frozen=True, kw_only=True):
    """Supervisor -> front: the whole merged key table (after start, reload or a CLI change)."""

    id: int
    keys: list[KeyEntry]


class KeysRequest(Base, tag_field="type", tag="keys", frozen=True, kw_only=True):
    """CLI -> supervisor: one `lingma-gw keys ACTION` (ADD carries the digest, never a secret)."""

    action: KeyAction
    name: str = ""
    sha256: str = ""
    limits: KeyLimits = KeyLimits()
    api_version: int = API_VERSION


class KeyInfo(Base, frozen=True, kw_only=True):
    """One row of `lingma-gw keys list`: settings and today's use, no secret, no digest."""

    name: str
    source: KeySource
    limits: KeyLimits
    state: KeyState
    created_at: float = 0.0
    requests_today: int = 0
    tokens_today: int = 0


class KeysReply(Base, tag_field="type", tag="keys_reply", frozen=True, kw_only=True):
    message: str = ""
    keys: list[KeyInfo] = []
