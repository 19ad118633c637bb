"""Runs in `lingma-gw doctor` (a worker-side tool): the redacted transcript of a runtime probe.

Every JSON-RPC message the doctor sends or receives is kept, in order, with its connection and
a relative time, so an operator can attach it to a bug report. Secrets and identities never
reach the file: values under token, key, password and user-identity keys are masked, and so
are `pt-`/`rt-` tokens, e-mail addresses and long numeric user ids inside any text.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

import msgspec

MASK = "***"
SECRET_KEYS = frozenset(
    key.lower()
    for key in (
        "token", "refreshToken", "securityOauthToken", "security_oauth_token", "refresh_token",
        "accessToken", "personalToken", "accessKey", "secretKey", "apiKey", "key", "password",
        "Cosy-MachineToken", "machineToken", "encrypt_user_info", "encryptUserInfo", "auth",
        "nonce", "verifier", "challenge", "machine_id", "machineId",
    )
)  # fmt: skip
IDENTITY_KEYS = frozenset(
    key.lower()
    for key in (
        "name", "username", "userName", "email", "accountId", "uid", "aid", "yxUid", "yx_uid",
        "orgId", "orgName", "organization_id", "organization_name", "staffId", "avatarUrl",
        "avatar_url", "user", "sessionTitle",
    )
)  # fmt: skip
_IN_TEXT = (
    (re.compile(r"\b(pt|rt)-[A-Za-z0-9_.-]{4,}"), r"\1-" + MASK),
    (re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+"), MASK + "@" + MASK),
    (re.compile(r"\b\d{12,}\b"), MASK),  # numeric user and account ids
    (re.compile(r"([?&](?:nonce|state|challenge|machine_id|token|auth)=)[^&\s\"]+"), r"\1" + MASK),
)


def redact(value: Any, key: str = "") -> Any:
    """A copy of `value` with secrets and identities masked (structure and types kept)."""
    lowered = key.lower()
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(item, key) for item in value]
    if isinstance(value, str):
        if value and (lowered in SECRET_KEYS or lowered in IDENTITY_KEYS):
            return MASK
        if lowered == "id" and value.isdigit():  # a user id, never one of our integer ids
            return MASK
        for pattern, replacement in _IN_TEXT:
            value = pattern.sub(replacement, value)
        return value
    return value


class Transcript:
    """The wire, as seen by the doctor: (seconds, connection, direction, redacted message)."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.lines: list[dict[str, Any]] = []

    def record(self, connection: str, direction: str, message: dict[str, Any]) -> None:
        self.lines.append(
            {
                "t": round(time.monotonic() - self.started, 3),
                "conn": connection,
                "dir": direction,
                "message": redact(message),
            }
        )

    def note(self, text: str) -> None:
        self.lines.append({"t": round(time.monotonic() - self.started, 3), "note": redact(text)})

    def write(self, path: Path) -> None:
        """JSON lines, private to the user (0600)."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            for line in self.lines:
                handle.write(msgspec.json.encode(line) + b"\n")
