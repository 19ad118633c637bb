"""Runs in the worker: the cloud credential, decrypted from the account's own work dir (§14.4).

`cache/user` is base64(AES-128-CBC(JSON)) with key = IV = the first 16 bytes of the machine id
in `cache/id`; when `cache/id` is missing, the id comes from the runtime's log line `using
machine id from file: <id>` (or LP's other markers). An operator may name an LP-format
credential file instead. The runtime refreshes `cache/user` while it runs, so the store
re-reads whenever one of its files changes (ZC-EA: key and info rotate at runtime). Keys,
tokens and `info` never reach a log line or an error message: `Credential.__repr__` hides them.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

AES_BLOCK = 16
MACHINE_ID_MARKERS = (
    "using machine id from file:",
    "machine id:",
    "machine_id:",
    "machineid:",
    "machine-id:",
)
_MACHINE_ID_JSON = re.compile(r"""(?i)"?(?:machine[_-]?id)"?\s*[:=]\s*"?([A-Za-z0-9._:-]{16,})"?""")
MAX_LOG_BYTES = 4 * 1024 * 1024  # the tail of a log is where the latest start-up line is
MAX_LOG_FILES = 24


class CredentialError(Exception):
    """No usable credential; the message says why without revealing any secret."""


@dataclass(frozen=True, repr=False)
class Credential:
    cosy_key: str
    encrypt_user_info: str
    user_id: str
    machine_id: str
    expire_ms: int = 0
    organization_id: str = ""
    source: str = ""  # where it came from: "cache/user" or the credential file's path

    def __repr__(self) -> str:
        return f"Credential(source={self.source!r}, expire_ms={self.expire_ms})"

    def same_login(self, other: Credential) -> bool:
        return (self.cosy_key, self.encrypt_user_info, self.user_id, self.machine_id) == (
            other.cosy_key,
            other.encrypt_user_info,
            other.user_id,
            other.machine_id,
        )


# --------------------------------------------------------------------------- decryption


def _aes_key(machine_id: str) -> bytes:
    key = machine_id.strip().encode()[:AES_BLOCK]
    if len(key) != AES_BLOCK:
        raise CredentialError("the machine id is shorter than 16 bytes: cannot decrypt cache/user")
    return key


def unpad_pkcs7(data: bytes) -> bytes:
    """Strip PKCS#7 padding, validating every pad byte (LP, L2A and TAP all do)."""
    if not data:
        raise CredentialError("cache/user decrypts to nothing")
    count = data[-1]
    if not 1 <= count <= AES_BLOCK or data[-count:] != bytes([count]) * count:
        raise CredentialError("cache/user has invalid padding (written with another machine id?)")
    return data[:-count]


def decrypt_user_cache(text: str, machine_id: str) -> dict[str, Any]:
    """`cache/user` text → its JSON object; raises CredentialError with a precise reason."""
    key = _aes_key(machine_id)
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise CredentialError("cache/user is not base64") from None
    if not raw or len(raw) % AES_BLOCK:
        raise CredentialError(f"cache/user is {len(raw)} bytes, not a multiple of 16")
    decryptor = Cipher(algorithms.AES(key), modes.CBC(key)).decryptor()
    plain = unpad_pkcs7(decryptor.update(raw) + decryptor.finalize())
    try:
        decoded = msgspec.json.decode(plain)
    except msgspec.DecodeError:
        raise CredentialError("cache/user does not decrypt to JSON (wrong machine id?)") from None
    if not isinstance(decoded, dict):
        raise CredentialError("cache/user is not a JSON object")
    return decoded


def _millis(value: Any) -> int:
    """`expire_time`: epoch milliseconds as a number or a string of digits (LP/L2A accept both)."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int | float):
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return 0


def _text(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return ""
    return str(value).strip() if isinstance(value, str | int) else ""


def credential_from(fields: dict[str, Any], machine_id: str, source: str) -> Credential:
    credential = Credential(
        cosy_key=_text(fields.get("key")),
        encrypt_user_info=_text(fields.get("encrypt_user_info")),
        user_id=_text(fields.get("uid")),
        machine_id=machine_id.strip(),
        expire_ms=_millis(fields.get("expire_time")),
        organization_id=_text(fields.get("organization_id")),
        source=source,
    )
    return validated(credential)


def validated(credential: Credential) -> Credential:
    missing = [
        name
        for name, value in (
            ("key", credential.cosy_key),
            ("encrypt_user_info", credential.encrypt_user_info),
            ("uid", credential.user_id),
            ("machine id", credential.machine_id),
        )
        if not value
    ]
    if missing:
        raise CredentialError(f"{credential.source}: the login lacks {', '.join(missing)}")
    return credential


# --------------------------------------------------------------------------- machine id


def _machine_id_candidate(text: str) -> str:
    token = text.strip().strip("\"'<>),]}")
    token = re.split(r"[\s,;]", token, maxsplit=1)[0].strip("\"'<>),]}")
    # A path is where the id lives, not the id; the real runtime logs the id itself.
    if len(token) < AES_BLOCK or "/" in token or "\\" in token:
        return ""
    return token


def machine_id_from_text(text: str) -> str:
    """The last machine id a log mentions (LP's markers, then `machineId: "…"` forms)."""
    lowered = text.lower()
    for marker in MACHINE_ID_MARKERS:
        index = lowered.rfind(marker)
        if index < 0:
            continue
        line = text[index + len(marker) :].split("\n", 1)[0]
        candidate = _machine_id_candidate(line)
        if candidate:
            return candidate
    for match in reversed(list(_MACHINE_ID_JSON.finditer(text))):
        candidate = _machine_id_candidate(match.group(1))
        if candidate:
            return candidate
    return ""


def _log_files(work_dir: Path) -> list[Path]:
    logs = work_dir / "logs"
    named = [logs / "lingma.log", logs / "Lingma.log"]
    try:
        found = [p for p in logs.rglob("*.log") if p.is_file()]
    except OSError:
        found = []
    found.sort(key=lambda p: p.stat().st_mtime_ns, reverse=True)
    ordered = [p for p in named if p.is_file()] + found[:MAX_LOG_FILES]
    return list(dict.fromkeys(ordered))


def _tail(path: Path) -> str:
    with path.open("rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        handle.seek(max(0, size - MAX_LOG_BYTES))
        return handle.read().decode("utf-8", "replace")


def machine_id_from_logs(work_dir: Path) -> str:
    for path in _log_files(work_dir):
        try:
            found = machine_id_from_text(_tail(path))
        except OSError:
            continue
        if found:
            return found
    return ""


def read_machine_id(work_dir: Path) -> str:
    """`cache/id` (trimmed), else the runtime's log lines; CredentialError if neither has it."""
    try:
        text = (work_dir / "cache" / "id").read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        text = ""
    found = text or machine_id_from_logs(work_dir)
    if not found:
        raise CredentialError("no machine id: cache/id is missing and no runtime log names one")
    return found


# --------------------------------------------------------------------------- sources


def load_from_work_dir(work_dir: Path) -> Credential:
    try:
        text = (work_dir / "cache" / "user").read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CredentialError("cache/user is missing: the runtime is not logged in") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CredentialError(f"cache/user is unreadable: {type(exc).__name__}") from None
    machine_id = read_machine_id(work_dir)
    return credential_from(decrypt_user_cache(text, machine_id), machine_id, "cache/user")


class _LpAuth(msgspec.Struct, kw_only=True):
    cosy_key: str = ""
    encrypt_user_info: str = ""
    user_id: str | int = ""
    machine_id: str = ""


class _LpFile(msgspec.Struct, kw_only=True):
    """LP's credential file (L2A adds schema_version, obtained_at, oauth: ignored here)."""

    auth: _LpAuth
    source: str = ""
    token_expire_time: str | int = ""


def load_from_file(path: Path) -> Credential:
    """An explicit LP-format credential file; all four `auth` fields are mandatory."""
    try:
        stored = msgspec.json.decode(path.read_bytes(), type=_LpFile)
    except OSError as exc:
        raise CredentialError(f"{path}: unreadable ({type(exc).__name__})") from None
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise CredentialError(f"{path}: not an LP-format credential file ({exc})") from None
    auth = stored.auth
    return validated(
        Credential(
            cosy_key=auth.cosy_key.strip(),
            encrypt_user_info=auth.encrypt_user_info.strip(),
            user_id=str(auth.user_id).strip(),
            machine_id=auth.machine_id.strip(),
            expire_ms=_millis(stored.token_expire_time),
            source=str(path),
        )
    )


FileIdentity = tuple[int, int, int] | None


def _identity(path: Path) -> FileIdentity:
    try:
        stat = path.stat()
    except OSError:
        return None
    return (stat.st_ino, stat.st_mtime_ns, stat.st_size)


class CredentialStore:
    """The account's current credential, re-read whenever one of its files changes.

    `recheck_s` > 0 looks at the files at most that often: every chat asks for the credential
    (twice), and two `stat` calls each time cost more than the rest of the lookup. A refreshed
    login is then seen within `recheck_s`; an auth error re-reads at once (`reload`).
    """

    def __init__(
        self,
        work_dir: str | Path,
        explicit_file: str = "",
        *,
        recheck_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.work_dir = Path(work_dir)
        self.explicit_file = Path(explicit_file) if explicit_file else None
        self._seen: tuple[FileIdentity, ...] | None = None
        self._credential: Credential | None = None
        self._problem = "the credential was not read yet"
        self._recheck_s = recheck_s
        self._clock = clock
        self._next_check = 0.0

    @property
    def watched(self) -> list[Path]:
        if self.explicit_file is not None:
            return [self.explicit_file]
        return [self.work_dir / "cache" / "user", self.work_dir / "cache" / "id"]

    @property
    def problem(self) -> str:
        """Why there is no credential ("" when there is one), as of the last read."""
        return "" if self._credential is not None else self._problem

    def changed(self) -> bool:
        return tuple(_identity(p) for p in self.watched) != self._seen

    def current(self) -> Credential:
        """The credential, re-read only when its files changed; raises CredentialError."""
        if self._due() and self.changed():
            return self.reload()
        if self._credential is None:
            raise CredentialError(self._problem)
        return self._credential

    def _due(self) -> bool:
        if self._recheck_s <= 0:
            return True
        now = self._clock()
        if now < self._next_check:
            return False
        self._next_check = now + self._recheck_s
        return True

    def reload(self) -> Credential:
        """Read again whatever the file identities say (an upstream auth error asks for it)."""
        self._seen = tuple(_identity(p) for p in self.watched)
        try:
            if self.explicit_file is not None:
                credential = load_from_file(self.explicit_file)
            else:
                credential = load_from_work_dir(self.work_dir)
        except CredentialError as exc:
            self._credential, self._problem = None, str(exc)
            raise
        self._credential = credential
        return credential
