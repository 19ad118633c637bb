"""Runs in the emulator: login attempts (nonces), the callback's token encoding, auth/status.

The login URL has the real runtime's shape (lingma-protocol.md §5.1) but points at the
emulator's own HTTP server unless LINGMA_EMULATOR_LOGIN_BASE says otherwise. The callback
validates and consumes the nonce, then writes `cache/user` — the only source of login state.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from emulator.store import WorkDir
from emulator.user_cache import UserRecord, new_user


@dataclass(frozen=True)
class LoginAttempt:
    nonce: str
    verifier: str
    challenge: str
    created: float


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def encode_callback(user: UserRecord) -> dict[str, str]:
    """The `auth` (uid, aid, name) and `token` (pt, rt, expiry) query values of a V2 callback."""
    auth = f"{user.uid}\n{user.aid}\n{user.name}"
    token = f"{user.security_oauth_token}\n{user.refresh_token}\n{user.expire_time}"
    return {"auth": _b64url(auth.encode()), "token": _b64url(token.encode())}


def decode_callback(auth: str, token: str) -> UserRecord:
    """Inverse of `encode_callback`; ValueError when either value is malformed."""
    try:
        uid, aid, name = _unb64url(auth).decode().split("\n", 2)
        pt, rt, expiry = _unb64url(token).decode().split("\n", 2)
        expire_time = int(expiry)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError("malformed auth/token in the login callback") from exc
    if not (uid and name and pt and rt):
        raise ValueError("empty field in the login callback")
    return new_user(name, uid=uid, aid=aid, token=pt, refresh_token=rt, expire_time=expire_time)


@dataclass
class LoginBroker:
    """Pending login nonces of this process plus the login-related work-dir writes."""

    workdir: WorkDir
    nonce_ttl_s: float
    attempts: dict[str, LoginAttempt] = field(default_factory=dict)

    def begin(self) -> LoginAttempt:
        self._expire()
        verifier = secrets.token_urlsafe(32)
        challenge = _b64url(hashlib.sha256(verifier.encode()).digest())
        attempt = LoginAttempt(secrets.token_hex(16), verifier, challenge, time.monotonic())
        self.attempts[attempt.nonce] = attempt
        return attempt

    def login_url(self, attempt: LoginAttempt, base: str, http_port: int) -> str:
        query = urlencode(
            {
                "nonce": attempt.nonce,
                "port": http_port,
                "state": f"2-{attempt.nonce}",
                "challenge": attempt.challenge,
                "challenge_method": "S256",
                "machine_id": self.workdir.machine_id(),
            }
        )
        return f"{base}/lingma/login?{query}"

    def consume(self, nonce: str) -> bool:
        """True once per valid, unexpired nonce."""
        self._expire()
        return self.attempts.pop(nonce, None) is not None

    def _expire(self) -> None:
        cutoff = time.monotonic() - self.nonce_ttl_s
        for nonce in [n for n, a in self.attempts.items() if a.created < cutoff]:
            del self.attempts[nonce]

    def complete(self, user: UserRecord) -> None:
        self.workdir.write_user(user)


def logged_out_status() -> dict[str, Any]:
    return {
        "status": 1,
        "name": "",
        "id": "",
        "accountId": "",
        "token": "",
        "refreshToken": "",
        "expireTime": 0,
        "userType": "",
        "whitelist": 0,
        "privacyPolicyAgreed": False,
        "quota": 0,
        "orgId": "",
        "orgName": "",
        "email": "",
        "messageId": "",
    }


def logged_in_status(user: UserRecord) -> dict[str, Any]:
    return {
        "status": 2,
        "name": user.name,
        "id": user.uid,
        "accountId": user.aid,
        "token": user.security_oauth_token,
        "refreshToken": user.refresh_token,
        "expireTime": user.expire_time,
        "userType": user.user_type,
        "cloudType": "emulator",
        "whitelist": 3,
        "privacyPolicyAgreed": user.data_policy_agreed,
        "quota": 0 if user.is_quota_exceeded else 1,
        "orgId": user.organization_id,
        "orgName": user.organization_name,
        "email": user.email,
        "yxUid": user.yx_uid,
        "avatarUrl": user.avatar_url,
        "isSubAccount": False,
        "userTag": "",
        "isPrivacyPolicyModifiable": user.is_data_policy_modifiable,
        "messageId": "",
    }
