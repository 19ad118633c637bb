"""Unit: a session bundle comes from outside - tar tricks, size caps, symlinks in the target -
and account names (from the file or the environment) cannot lead outside the state directory.

Complements tests/unit/test_worker_bundles.py (plain absolute paths, `..`, links, devices).
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import os
import tarfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from supervisor.config import (
    ACCOUNT_NAME_PATTERN,
    AccountConfig,
    Config,
    ConfigError,
    ServerConfig,
    load_config,
)
from worker import bundles
from worker.bundles import BundleError, decode_bundle, pack_workdir, unpack_bundle

pytestmark = pytest.mark.unit


def tarball(*members: tuple[tarfile.TarInfo, bytes], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=fmt) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buffer.getvalue()


def regular(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


USER = regular("cache/user", b"ENCRYPTED")


def refused(raw: bytes, target: Path, reason: str) -> None:
    with pytest.raises(BundleError, match=reason):
        unpack_bundle(raw, target)
    assert not target.exists() or not any(target.rglob("*")), "something was written"


def test_pax_and_gnu_long_names_cannot_climb_out(tmp_path: Path) -> None:
    pax = tarfile.TarInfo("cache/harmless")
    pax.size = 1
    pax.pax_headers = {"path": "../../etc/cron.d/evil"}  # the name that counts on extraction
    refused(tarball(USER, (pax, b"x")), tmp_path / "a", "leaves")
    long_name = "cache/" + "d/" * 60 + "../" * 70 + "escape"  # > 100 chars: a GNU longname
    refused(tarball(USER, regular(long_name), fmt=tarfile.GNU_FORMAT), tmp_path / "b", "leaves")


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("..\\..\\evil", "Windows"),
        ("cache\\user", "Windows"),
        ("/", "absolute"),
        (".", "leaves"),
        ("./", "leaves"),
        ("cache/../../x", "leaves"),
    ],
)
def test_odd_names_are_refused(tmp_path: Path, name: str, reason: str) -> None:
    refused(tarball(USER, regular(name)), tmp_path / "wd", reason)


def test_block_devices_and_a_bad_member_last_write_nothing(tmp_path: Path) -> None:
    device = tarfile.TarInfo("cache/sda")
    device.type = tarfile.BLKTYPE
    refused(tarball(USER, regular("cache/id"), (device, b"")), tmp_path / "wd", "not a regular")


def test_caps_on_members_total_size_and_encoded_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bundles, "MAX_MEMBERS", 5)
    many = [regular(f"cache/{i}.json") for i in range(6)]
    refused(tarball(USER, *many), tmp_path / "a", "more than 5 members")
    monkeypatch.setattr(bundles, "MAX_TOTAL_BYTES", 64)
    parts = [regular(f"cache/{i}.json", b"0" * 30) for i in range(3)]  # each fine, together not
    refused(tarball(USER, *parts), tmp_path / "b", "unpacks to more than 64 bytes")
    monkeypatch.setattr(bundles, "MAX_BUNDLE_B64", 100)
    with pytest.raises(BundleError, match="larger than 100"):
        decode_bundle("A" * 101)


def test_a_compression_bomb_is_refused_by_its_declared_size(tmp_path: Path) -> None:
    # 9 MiB of zeros compresses to a few KiB; its header says how big it would be.
    bomb = tarball(USER, regular("cache/bomb.json", bytes(9 * 1024 * 1024)))
    assert len(bomb) < 64 * 1024
    refused(bomb, tmp_path / "wd", "larger than")


def test_a_corrupt_stream_is_refused(tmp_path: Path) -> None:
    good = tarball(USER, regular("cache/id"))
    refused(good[: len(good) // 2], tmp_path / "a", "not a readable tar")
    refused(gzip.compress(b"\0" * 10 + b"not a tar header" * 40), tmp_path / "b", "tar|cache/user")


def test_a_symlinked_file_in_the_target_is_replaced_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("keep me")
    work_dir = tmp_path / "wd"
    (work_dir / "cache").mkdir(parents=True)
    (work_dir / "cache" / "user").symlink_to(outside)
    assert unpack_bundle(tarball(USER), work_dir) == ["cache/user"]
    assert outside.read_text() == "keep me"
    user = work_dir / "cache" / "user"
    assert not user.is_symlink() and user.read_bytes() == b"ENCRYPTED"


def test_dot_segments_are_normalised_inside(tmp_path: Path) -> None:
    raw = tarball(regular("./cache/./user", b"u"), regular("cache//id", b"i"))
    assert sorted(unpack_bundle(raw, tmp_path / "wd")) == ["cache/id", "cache/user"]


def test_export_does_not_follow_a_symlink_out_of_the_work_dir(tmp_path: Path) -> None:
    secret = tmp_path / "host-secret"
    secret.write_text("not yours")
    work_dir = tmp_path / "wd"
    (work_dir / "cache").mkdir(parents=True)
    (work_dir / "cache" / "user").symlink_to(secret)
    with pytest.raises(BundleError, match="no cache/user"):
        pack_workdir(work_dir)
    (work_dir / "cache" / "user").unlink()
    (work_dir / "cache" / "user").write_text("login")
    (work_dir / "cache" / "cache.json").symlink_to(secret)
    with tarfile.open(fileobj=io.BytesIO(pack_workdir(work_dir))) as tar:
        assert tar.getnames() == ["cache/user"]


def config_with(tmp_path: Path, name: str) -> Path:
    state = tmp_path / "state"
    text = f'[server]\nstate_dir = "{state}"\n[[accounts]]\nname = {json.dumps(name)}\n'
    path = tmp_path / "gw.toml"
    path.write_text(text)
    return path


@settings(max_examples=60, derandomize=True, database=None)
@given(name=st.from_regex(ACCOUNT_NAME_PATTERN, fullmatch=True))
def test_every_valid_account_name_stays_inside_the_state_dir(name: str) -> None:
    root = Path("/nonexistent-root")
    state = (root / "state").resolve()
    config = Config(server=ServerConfig(state_dir=str(state)), accounts=[AccountConfig(name=name)])
    work_dir = Path(os.path.normpath(config.work_dir(name)))
    assert work_dir.parent == state / "accounts" and work_dir.name == name


@pytest.mark.parametrize("name", ["../../etc", "..", "a/../../b", "/abs", "a\\b", "a\0b", " a"])
def test_hostile_names_are_refused_from_the_file_and_the_environment(
    tmp_path: Path, name: str
) -> None:
    with pytest.raises(ConfigError, match="account names must be"):
        load_config(config_with(tmp_path, name), environ={})
    accounts = json.dumps([{"name": name}])
    with pytest.raises(ConfigError, match="LINGMA_ACCOUNTS"):
        load_config(config_with(tmp_path, "ok"), environ={"LINGMA_ACCOUNTS": accounts})


def test_a_bundle_from_the_environment_is_only_decoded_by_the_worker(tmp_path: Path) -> None:
    """The supervisor passes it along untouched; the worker's import is what validates it."""
    hostile = base64.b64encode(tarball(USER, regular("../escape"))).decode()
    config = load_config(
        config_with(tmp_path, "acct-a"), environ={"LINGMA_SESSION_BUNDLE": hostile}
    )
    assert config.accounts[0].session_bundle == hostile
    refused(decode_bundle(config.accounts[0].session_bundle), tmp_path / "wd", "leaves")
