"""Runs in the emulator: the `cache/user` login record in the real runtime's on-disk format.

`cache/user` is base64(AES-128-CBC(JSON)) with key = IV = the first 16 characters of `cache/id`
and PKCS#7 padding (lingma-protocol.md §7.3), so credential importers can be tested against it.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time

import msgspec
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

TOKEN_LIFETIME_MS = 60 * 24 * 3600 * 1000  # real tokens last about 60 days
KEY_CHARS = 16


class UserRecord(msgspec.Struct, kw_only=True):
    """Decrypted `cache/user` JSON; snake_case keys as the runtime writes them."""

    name: str
    aid: str
    uid: str
    yx_uid: str = ""
    organization_id: str = ""
    organization_name: str = ""
    staffId: str = ""
    avatar_url: str = ""
    key: str = ""
    encrypt_user_info: str = ""
    user_source_channel: str = "lingma-emulator"
    security_oauth_token: str
    refresh_token: str
    expire_time: int
    user_type: str = "personal_standard"
    data_policy_agreed: bool = True
    email: str = ""
    is_data_policy_modifiable: bool = False
    is_quota_exceeded: bool = False
    organization_tags: list[str] = msgspec.field(default_factory=list)


class UserFileError(ValueError):
    """`cache/user` exists but cannot be decrypted or decoded with this `cache/id`."""


def _cipher(machine_id: str) -> Cipher[modes.CBC]:
    key = machine_id.strip()[:KEY_CHARS].encode()
    if len(key) != KEY_CHARS:
        raise UserFileError("cache/id is shorter than 16 characters")
    return Cipher(algorithms.AES(key), modes.CBC(key))


def encrypt_user(user: UserRecord, machine_id: str) -> str:
    plain = msgspec.json.encode(user)
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plain) + padder.finalize()
    encryptor = _cipher(machine_id).encryptor()
    return base64.b64encode(encryptor.update(padded) + encryptor.finalize()).decode()


def decrypt_user(text: str, machine_id: str) -> UserRecord:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
        decryptor = _cipher(machine_id).decryptor()
        padded = decryptor.update(raw) + decryptor.finalize()
        unpadder = padding.PKCS7(128).unpadder()
        plain = unpadder.update(padded) + unpadder.finalize()
        return msgspec.json.decode(plain, type=UserRecord)
    except (ValueError, msgspec.DecodeError) as exc:
        raise UserFileError(f"cache/user is unreadable: {type(exc).__name__}") from None


def stable_digits(seed: str, count: int = 16) -> str:
    """A deterministic numeric account id for a login name (ids look like 5930000000000000)."""
    number = int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "big")
    return str(number).rjust(count, "0")[:count]


def fresh_tokens() -> tuple[str, str, int]:
    """A new (pt-…, rt-…, expiry in epoch ms) triple."""
    now_ms = int(time.time() * 1000)
    return (
        "pt-" + secrets.token_urlsafe(18),
        "rt-" + secrets.token_urlsafe(18),
        now_ms + TOKEN_LIFETIME_MS,
    )


def new_user(
    name: str,
    *,
    uid: str = "",
    aid: str = "",
    token: str = "",
    refresh_token: str = "",
    expire_time: int = 0,
) -> UserRecord:
    """A logged-in record for `name`; missing ids and tokens are generated."""
    pt, rt, expiry = fresh_tokens()
    uid = uid or stable_digits("uid:" + name)
    return UserRecord(
        name=name,
        uid=uid,
        aid=aid or uid,
        yx_uid=stable_digits("yx:" + name, 12),
        email=name if "@" in name else f"{name}@example.com",
        key=secrets.token_hex(16),
        encrypt_user_info=secrets.token_urlsafe(24),
        security_oauth_token=token or pt,
        refresh_token=refresh_token or rt,
        expire_time=expire_time or expiry,
    )
