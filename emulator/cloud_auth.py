"""Runs in the emulator: checking the COSY signature of a cloud request (§14.15 Authentication).

The stand-in holds no RSA key and decrypts nothing: it compares `Cosy-Key`, `info`, the uid
and the machine id with the logins this emulator issued (each work dir's `cache/user`, re-read
when it changes) and recomputes the md5 over the raw body bytes exactly as received. Verdicts
mirror the real answers: no or malformed COSY auth → 403 `Request discarded` (text); a bad
signature, key or header → 403 code 101; uid/machine mismatch → 403 code 403 `User invalid`;
`info` mismatch → 403 code 105 `Login expired`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import msgspec

from emulator.user_cache import UserRecord

ALGO_PREFIX = "/algo"
_BEARER = re.compile(r"Bearer COSY\.([A-Za-z0-9+/=]+)\.([0-9a-f]{32})")


@dataclass(frozen=True)
class Login:
    """One login the emulator issued: the strings a signed request must carry."""

    key: str
    info: str
    uid: str
    machine_id: str

    @classmethod
    def of(cls, user: UserRecord, machine_id: str) -> Login:
        return cls(user.key, user.encrypt_user_info, user.uid, machine_id)


@dataclass(frozen=True)
class AuthVerdict:
    status: int  # 200 = accepted
    code: str = ""  # 101 | 105 | 403 | "" (plain-text discard)
    message: str = ""
    uid: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 200

    @property
    def body(self) -> bytes:
        if not self.code:
            return self.message.encode()
        return msgspec.json.encode({"code": self.code, "message": self.message})


DISCARDED = AuthVerdict(403, "", "Request discarded")
SIGNATURE_INVALID = AuthVerdict(403, "101", "Signature invalid")
USER_INVALID = AuthVerdict(403, "403", "User invalid")
LOGIN_EXPIRED = AuthVerdict(403, "105", "Login expired")


def signing_path(path: str) -> str:
    bare = path.split("?", 1)[0]
    return bare[len(ALGO_PREFIX) :] if bare.startswith(ALGO_PREFIX + "/") else bare


def expected_signature(payload_b64: str, key: str, date: str, body: bytes, path: str) -> str:
    preimage = b"\n".join(
        (payload_b64.encode(), key.encode(), date.encode(), body, signing_path(path).encode())
    )
    return hashlib.md5(preimage, usedforsecurity=False).hexdigest()


def _payload_info(payload_b64: str) -> str | None:
    try:
        payload = msgspec.json.decode(base64.b64decode(payload_b64, validate=True))
    except (binascii.Error, ValueError, msgspec.DecodeError):
        return None
    if not isinstance(payload, dict) or payload.get("version") != "v1":
        return None
    info = payload.get("info")
    return info if isinstance(info, str) else None


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


class Verifier:
    """Checks each request against the current logins; knobs add the §14.15 variants."""

    def __init__(
        self,
        logins: Callable[[], Iterable[Login]],
        *,
        date_window_s: int = 0,
        always_expired: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._logins = logins
        self._window = date_window_s
        self._always_expired = always_expired
        self._clock = clock

    def check(self, headers: Mapping[str, str], path: str, body: bytes) -> AuthVerdict:
        match = _BEARER.fullmatch(headers.get("Authorization", "").strip())
        if match is None:
            return DISCARDED
        payload_b64, signature = match.groups()
        info = _payload_info(payload_b64)
        login = self._signed_by(headers, payload_b64, signature, path, body)
        if info is None or login is None:
            return SIGNATURE_INVALID
        return self._login_verdict(headers, login, info)

    def _signed_by(
        self, headers: Mapping[str, str], payload_b64: str, signature: str, path: str, body: bytes
    ) -> Login | None:
        """The login whose key signed this request, or None (bad key, date, user, md5)."""
        key, date, uid = (headers.get(n, "") for n in ("Cosy-Key", "Cosy-Date", "Cosy-User"))
        if not key or not uid or not date.isdigit():
            return None
        if self._window and abs(self._clock() - int(date)) > self._window:
            return None
        login = next((x for x in self._logins() if _same(key, x.key)), None)
        expected = expected_signature(payload_b64, key, date, body, path)
        return login if login is not None and _same(signature, expected) else None

    def _login_verdict(self, headers: Mapping[str, str], login: Login, info: str) -> AuthVerdict:
        uid = headers.get("Cosy-User", "")
        if uid != login.uid or headers.get("Cosy-Machineid", "") != login.machine_id:
            return USER_INVALID
        if self._always_expired or not _same(info, login.info):
            return LOGIN_EXPIRED
        return AuthVerdict(200, uid=uid)
