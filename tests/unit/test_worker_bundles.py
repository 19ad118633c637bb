"""Session bundles: export/import round trip and refusal of hostile archives."""

from __future__ import annotations

import base64
import io
import tarfile
from pathlib import Path

import pytest

from worker.bundles import (
    MAX_FILE_BYTES,
    BundleError,
    decode_bundle,
    encode_bundle,
    has_login,
    pack_workdir,
    unpack_bundle,
)

pytestmark = pytest.mark.unit


def logged_in_work_dir(root: Path) -> Path:
    (root / "cache" / "db").mkdir(parents=True)
    (root / "cache" / "id").write_text("0b3c-machine")
    (root / "cache" / "user").write_text("ENCRYPTED")
    (root / "cache" / "cache.json").write_text('{"endpoint": "https://x"}')
    (root / "cache" / "db" / "local.db").write_bytes(b"big database")
    (root / "logs").mkdir()
    (root / "logs" / "lingma.log").write_text("log")
    (root / ".info.json").write_text("{}")
    return root


def tar_with(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.addfile(_user_info(), io.BytesIO(b"u"))
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data else None)
    return buffer.getvalue()


def _user_info() -> tarfile.TarInfo:
    info = tarfile.TarInfo("cache/user")
    info.size = 1
    return info


def member(
    name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"x"
) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
        info.linkname = "/etc/passwd"
    return info, data if kind == tarfile.REGTYPE else b""


def test_round_trip_carries_only_the_login_files(tmp_path: Path) -> None:
    source = logged_in_work_dir(tmp_path / "a")
    bundle = encode_bundle(pack_workdir(source))
    target = tmp_path / "b"
    written = unpack_bundle(decode_bundle(bundle), target)
    assert sorted(written) == ["cache/cache.json", "cache/id", "cache/user"]
    assert (target / "cache" / "user").read_text() == "ENCRYPTED"
    assert (target / "cache" / "user").stat().st_mode & 0o777 == 0o600
    assert has_login(target) and not (target / "logs").exists()


def test_export_needs_a_login(tmp_path: Path) -> None:
    (tmp_path / "cache").mkdir()
    with pytest.raises(BundleError, match="cache/user"):
        pack_workdir(tmp_path)


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (member("/etc/cron.d/x"), "absolute"),
        (member("cache/../../escape"), "leaves"),
        (member("../escape"), "leaves"),
        (member("cache/link", tarfile.SYMTYPE), "not a regular file"),
        (member("cache/hard", tarfile.LNKTYPE), "not a regular file"),
        (member("cache/dev", tarfile.CHRTYPE), "not a regular file"),
        (member("cache/fifo", tarfile.FIFOTYPE), "not a regular file"),
        (member("cache/huge", data=b"0" * (MAX_FILE_BYTES + 1)), "larger than"),
    ],
)
def test_hostile_members_are_refused_and_nothing_is_written(
    tmp_path: Path, bad: tuple[tarfile.TarInfo, bytes], reason: str
) -> None:
    with pytest.raises(BundleError, match=reason):
        unpack_bundle(tar_with(bad), tmp_path / "wd")
    assert not (tmp_path / "wd").exists()


def test_garbage_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="base64"):
        decode_bundle("not*base64!")
    with pytest.raises(BundleError, match="tar"):
        unpack_bundle(b"definitely not a tarball", tmp_path)
    no_user = io.BytesIO()
    with tarfile.open(fileobj=no_user, mode="w:gz") as tar:
        info = tarfile.TarInfo("cache/id")
        tar.addfile(info, io.BytesIO(b""))
    with pytest.raises(BundleError, match="no cache/user"):
        unpack_bundle(no_user.getvalue(), tmp_path)
    assert decode_bundle(" " + base64.b64encode(b"ok").decode() + "\n") == b"ok"


def test_a_symlinked_directory_in_the_target_is_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    work_dir = tmp_path / "wd"
    work_dir.mkdir()
    (work_dir / "cache").symlink_to(outside)
    with pytest.raises(BundleError, match="outside"):
        unpack_bundle(tar_with(), work_dir)
    assert list(outside.iterdir()) == []
