"""Runs in the worker: login bundles, a logged-in work dir's login as base64 tar.gz.

Operators know them as session bundles (`lingma-gw export-session`, `[[accounts]]
session_bundle`, `LINGMA_SESSION_BUNDLE`); inside the gateway "session" means an upstream chat
session only, so the code says login bundle.

A Lingma login lives in `<workDir>/cache/id` + `cache/user` (lingma-protocol.md §7.3-§7.4);
copying those (with the small config files) to a fresh work dir carries the login. Export packs
exactly those files. Import treats the bundle as hostile: only regular files and directories,
relative paths without `..`, bounded sizes and counts, written by us (never `extractall`).
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import tarfile
from pathlib import Path, PurePosixPath

MAX_BUNDLE_B64 = 16 * 1024 * 1024
MAX_TOTAL_BYTES = 32 * 1024 * 1024
MAX_FILE_BYTES = 8 * 1024 * 1024
MAX_MEMBERS = 256

# What a login needs (and the config beside it); databases, logs and indexes stay behind.
EXPORT_GLOBS = ("cache/id", "cache/user", "cache/quota", "cache/*.json", "extension/local/*.json")
EXPORT_TOP_LEVEL_SKIP = frozenset({".info.json"})


class BundleError(ValueError):
    """The bundle is unusable; the message says why and never contains bundle content."""


def export_files(work_dir: Path) -> list[Path]:
    files = {p for pattern in EXPORT_GLOBS for p in work_dir.glob(pattern)}
    files.update(p for p in work_dir.glob("*.json") if p.name not in EXPORT_TOP_LEVEL_SKIP)
    return sorted(p for p in files if p.is_file() and not p.is_symlink())


def pack_workdir(work_dir: str | Path) -> bytes:
    """tar.gz of the login files under `work_dir`, paths relative to it."""
    root = Path(work_dir)
    files = export_files(root)
    if not any(p.relative_to(root).as_posix() == "cache/user" for p in files):
        raise BundleError(f"{root} holds no cache/user: nothing to export")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in files:
            info = tar.gettarinfo(str(path), arcname=path.relative_to(root).as_posix())
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mode = 0o600
            with path.open("rb") as handle:
                tar.addfile(info, handle)
    return buffer.getvalue()


def encode_bundle(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def decode_bundle(bundle_b64: str) -> bytes:
    text = "".join(bundle_b64.split())
    if len(text) > MAX_BUNDLE_B64:
        raise BundleError(f"bundle is larger than {MAX_BUNDLE_B64} base64 characters")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BundleError("bundle is not valid base64") from exc


def _safe_name(name: str) -> PurePosixPath:
    path = PurePosixPath(name)
    if path.is_absolute() or name.startswith(("/", "\\")) or "\\" in name:
        raise BundleError(f"bundle member {name!r} has an absolute or Windows path")
    parts = [p for p in path.parts if p != "."]
    if not parts or ".." in parts:
        raise BundleError(f"bundle member {name!r} leaves the work dir")
    return PurePosixPath(*parts)


def _checked_members(tar: tarfile.TarFile) -> list[tuple[tarfile.TarInfo, PurePosixPath]]:
    members: list[tuple[tarfile.TarInfo, PurePosixPath]] = []
    total = 0
    for info in tar:
        if len(members) >= MAX_MEMBERS:
            raise BundleError(f"bundle has more than {MAX_MEMBERS} members")
        if not (info.isreg() or info.isdir()):
            raise BundleError(f"bundle member {info.name!r} is not a regular file or directory")
        if info.size > MAX_FILE_BYTES:
            raise BundleError(f"bundle member {info.name!r} is larger than {MAX_FILE_BYTES} bytes")
        total += info.size
        if total > MAX_TOTAL_BYTES:
            raise BundleError(f"bundle unpacks to more than {MAX_TOTAL_BYTES} bytes")
        members.append((info, _safe_name(info.name)))
    return members


def unpack_bundle(raw: bytes, work_dir: str | Path) -> list[str]:
    """Validate every member first, then write them under `work_dir`; returns relative paths."""
    root = Path(work_dir)
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:*") as tar:
            members = _checked_members(tar)
            contents = {name: _read_member(tar, info) for info, name in members if info.isreg()}
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise BundleError(f"bundle is not a readable tar archive: {type(exc).__name__}") from exc
    if not any(name.as_posix() == "cache/user" for name in contents):
        raise BundleError("bundle holds no cache/user: it carries no login")
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    written: list[str] = []
    for name, data in contents.items():
        target = root.joinpath(*name.parts)
        _ensure_inside(root, target)
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if target.is_symlink():
            target.unlink()
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        written.append(name.as_posix())
    return written


def _read_member(tar: tarfile.TarFile, info: tarfile.TarInfo) -> bytes:
    handle = tar.extractfile(info)
    if handle is None:
        raise BundleError(f"bundle member {info.name!r} cannot be read")
    data = handle.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise BundleError(f"bundle member {info.name!r} is larger than {MAX_FILE_BYTES} bytes")
    return data


def _ensure_inside(root: Path, target: Path) -> None:
    """Refuse to write through a symlinked directory that points outside the work dir."""
    resolved_root = root.resolve()
    if not target.parent.resolve().is_relative_to(resolved_root):
        raise BundleError(f"{target.relative_to(root)} would be written outside the work dir")


def has_login(work_dir: str | Path) -> bool:
    return (Path(work_dir) / "cache" / "user").is_file()
