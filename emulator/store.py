"""Runs in the emulator: the work directory — machine id, login record, config, discovery files.

Layout follows the real runtime (lingma-protocol.md §7.3): `cache/id`, `cache/user`,
`cache/cache.json`, `logs/lingma.log`, `.info.json` and the legacy `.info`. Login state is read
from disk on demand (cached by file identity), so copying a work dir carries the login and
deleting `cache/user` logs out, exactly as with the real binary.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

import msgspec

from emulator.user_cache import UserFileError, UserRecord, decrypt_user, encrypt_user

# Never copied by --copyDataDir: the login and this instance's own discovery files and logs.
_NOT_COPIED = {".info", ".info.json", "logs", ".emulator-instance.lock"}
INSTANCE_LOCK = ".emulator-instance.lock"
_NOT_COPIED_IN_CACHE = {"user", "id"}


class SharedClientInfo(msgspec.Struct):
    """`.info.json`, field names and order as the runtime writes them."""

    websocketPort: int
    pid: int
    ipcServerPath: str
    isDev: bool = False


def write_atomically(path: Path, data: bytes) -> None:
    """Readers see the old file or the complete new one, never a partial write."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class WorkDir:
    """Every file of one emulated runtime instance."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.cache = root / "cache"
        self.id_path = self.cache / "id"
        self.user_path = self.cache / "user"
        self.config_path = self.cache / "cache.json"
        self.machine_token_path = self.cache / "machine_token.json"
        self.info_json = root / ".info.json"
        self.info_legacy = root / ".info"
        self.log_path = root / "logs" / "lingma.log"
        self._user_key: tuple[int, int, int] | None = None
        self._user: UserRecord | None = None

    def prepare(self) -> None:
        self.cache.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        if not self.id_path.exists():
            write_atomically(self.id_path, str(uuid.uuid4()).encode())

    def machine_id(self) -> str:
        return self.id_path.read_text().strip()

    # -- login record -------------------------------------------------------------------

    def read_user(self) -> UserRecord | None:
        """The logged-in user, or None; re-read whenever `cache/user` changes on disk."""
        try:
            stat = self.user_path.stat()
        except FileNotFoundError:
            self._user_key, self._user = None, None
            return None
        key = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if key != self._user_key:
            try:
                self._user = decrypt_user(self.user_path.read_text(), self.machine_id())
            except (UserFileError, OSError):
                self._user = None
            self._user_key = key
        return self._user

    def write_user(self, user: UserRecord) -> None:
        write_atomically(self.user_path, encrypt_user(user, self.machine_id()).encode())

    def remove_user(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.user_path.unlink()
        self._user_key, self._user = None, None

    # -- persisted config -------------------------------------------------------------------

    def _config(self) -> dict[str, Any]:
        try:
            loaded = msgspec.json.decode(self.config_path.read_bytes())
        except (FileNotFoundError, msgspec.DecodeError):
            return {"regionEnv": "cn"}
        return loaded if isinstance(loaded, dict) else {"regionEnv": "cn"}

    def endpoint(self) -> str:
        value = self._config().get("endpoint", "")
        return value if isinstance(value, str) else ""

    def set_endpoint(self, endpoint: str) -> None:
        config = self._config()
        config["endpoint"] = endpoint
        write_atomically(self.config_path, msgspec.json.encode(config))

    # -- machine token (REQUIRE_MACHINE_TOKEN knob) ----------------------------------------

    def machine_token(self) -> str:
        """`token` of `cache/machine_token.json`, or "" when it is missing or unreadable."""
        try:
            data = msgspec.json.decode(self.machine_token_path.read_bytes())
        except (OSError, msgspec.DecodeError):
            return ""
        token = data.get("token") if isinstance(data, dict) else None
        return token if isinstance(token, str) else ""

    def ensure_machine_token(self) -> str:
        """Keep a non-empty token; write a random one when there is none (an empty token, as in
        Lingma's own cache, could not be required of anyone)."""
        token = self.machine_token()
        if not token:
            token = secrets.token_hex(16)
            write_atomically(self.machine_token_path, msgspec.json.encode({"token": token}))
        return token

    # -- instances ----------------------------------------------------------------------

    def claim_instance(self) -> int | None:
        """An flock held for this process's life; None when another live instance holds it.

        Only detection: the real runtime's behaviour with two instances on one dir is unknown
        (lingma-protocol.md §7.5, §13), so the emulator logs it and carries on.
        """
        fd = os.open(self.root / INSTANCE_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return fd

    # -- discovery files ----------------------------------------------------------------

    def clear_info(self) -> None:
        """Remove a previous run's discovery files, so readers wait for this run's."""
        for path in (self.info_json, self.info_legacy):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def write_info(self, info: SharedClientInfo) -> None:
        legacy = f"{info.websocketPort}\n{info.pid}\n{info.ipcServerPath}\n"
        write_atomically(self.info_legacy, legacy.encode())
        write_atomically(self.info_json, msgspec.json.encode(info))

    # -- --copyDataDir ------------------------------------------------------------------

    def copy_data_from(self, source: Path) -> int:
        """Copy another work dir's data, but never its login (real: `No cached user info`)."""
        if not source.is_dir() or source.resolve() == self.root.resolve():
            return 0
        copied = 0
        for entry in source.iterdir():
            if entry.name in _NOT_COPIED:
                continue
            target = self.root / entry.name
            if entry.name == "cache" and entry.is_dir():
                copied += self._copy_cache(entry)
            elif entry.is_dir():
                shutil.copytree(entry, target, dirs_exist_ok=True)
                copied += 1
            elif not target.exists():
                shutil.copy2(entry, target)
                copied += 1
        return copied

    def _copy_cache(self, source_cache: Path) -> int:
        self.cache.mkdir(parents=True, exist_ok=True)
        copied = 0
        for entry in source_cache.iterdir():
            target = self.cache / entry.name
            if entry.name in _NOT_COPIED_IN_CACHE or target.exists():
                continue
            if entry.is_dir():
                shutil.copytree(entry, target)
            else:
                shutil.copy2(entry, target)
            copied += 1
        return copied
