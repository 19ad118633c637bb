"""Unit: the cloud credential (§14.4) — decryption, machine id recovery, LP files, re-reads."""

from __future__ import annotations

import os
from pathlib import Path

import msgspec
import pytest

from emulator.store import WorkDir
from emulator.user_cache import encrypt_user, new_user
from worker.cloud.credential import (
    CredentialError,
    CredentialStore,
    decrypt_user_cache,
    load_from_file,
    load_from_work_dir,
    machine_id_from_text,
)

pytestmark = pytest.mark.unit

MACHINE_ID = "0c4f0a52-7a4e-4c3b-9a55-1234567890ab"
# Independent vector: `openssl enc -aes-128-cbc` with key = IV = b"0c4f0a52-7a4e-4c" (the id's
# first 16 characters) over {"key":"K","encrypt_user_info":"I","uid":"42"}, base64.
OPENSSL_VECTOR = "nWxHEs8HKM2XZEwd8hkgSPVedrT+tZ6Gsn7eyuWHxkLTCmwbfDdFZBNHnR9lTI1W"


def logged_in_dir(root: Path, machine_id: str = MACHINE_ID) -> WorkDir:
    workdir = WorkDir(root)
    workdir.cache.mkdir(parents=True)
    workdir.id_path.write_text(machine_id + "\n")
    return workdir


def test_decrypts_an_openssl_vector() -> None:
    assert decrypt_user_cache(OPENSSL_VECTOR + "\n", MACHINE_ID) == {
        "key": "K",
        "encrypt_user_info": "I",
        "uid": "42",
    }


def test_work_dir_written_by_the_emulator_helper(tmp_path: Path) -> None:
    workdir = logged_in_dir(tmp_path)
    user = new_user("demo")
    workdir.write_user(user)
    credential = load_from_work_dir(tmp_path)
    assert credential.cosy_key == user.key
    assert credential.encrypt_user_info == user.encrypt_user_info
    assert credential.user_id == user.uid and credential.machine_id == MACHINE_ID
    assert credential.expire_ms == user.expire_time
    assert user.key not in repr(credential) and user.encrypt_user_info not in repr(credential)


@pytest.mark.parametrize(
    "line",
    [
        f"2026-01-01 INFO using machine id from file: {MACHINE_ID}\n",
        f'debug {{"machineId":"{MACHINE_ID}","x":1}}\n',
        f"machine_id: {MACHINE_ID}, pid 7\n",
    ],
)
def test_machine_id_from_a_log_line_when_cache_id_is_missing(tmp_path: Path, line: str) -> None:
    workdir = logged_in_dir(tmp_path)
    workdir.write_user(new_user("demo"))
    workdir.id_path.unlink()
    workdir.log_path.parent.mkdir(parents=True)
    workdir.log_path.write_text("noise\n" + line + "more noise\n")
    assert load_from_work_dir(tmp_path).machine_id == MACHINE_ID


def test_a_logged_path_is_not_a_machine_id() -> None:
    assert machine_id_from_text("using machine id from file: /home/x/.lingma/cache/id\n") == ""


@pytest.mark.parametrize(
    ("text", "machine_id", "reason"),
    [
        ("not base64!", MACHINE_ID, "not base64"),
        ("QUJD", MACHINE_ID, "not a multiple of 16"),
        (OPENSSL_VECTOR, "short-id", "shorter than 16"),
        (OPENSSL_VECTOR, "ffffffff-7a4e-4c3b-0000-000000000000", "padding|JSON"),
    ],
)
def test_clear_errors(text: str, machine_id: str, reason: str) -> None:
    with pytest.raises(CredentialError, match=reason):
        decrypt_user_cache(text, machine_id)


def test_missing_login_and_missing_fields(tmp_path: Path) -> None:
    logged_in_dir(tmp_path)
    with pytest.raises(CredentialError, match="cache/user is missing"):
        load_from_work_dir(tmp_path)
    keyless = msgspec.structs.replace(new_user("demo"), key="")
    encrypted = encrypt_user(keyless, MACHINE_ID)
    (tmp_path / "cache" / "user").write_text(encrypted)
    with pytest.raises(CredentialError, match="lacks key"):
        load_from_work_dir(tmp_path)


def test_lp_credential_file(tmp_path: Path) -> None:
    path = tmp_path / "credential.json"
    auth = {"cosy_key": "k", "encrypt_user_info": "i", "user_id": 5930, "machine_id": MACHINE_ID}
    stored = {"source": "manual", "token_expire_time": "1700", "auth": auth}
    path.write_bytes(msgspec.json.encode(stored))
    credential = load_from_file(path)
    assert (credential.cosy_key, credential.user_id, credential.expire_ms) == ("k", "5930", 1700)
    path.write_bytes(msgspec.json.encode({"auth": {**auth, "machine_id": ""}}))
    with pytest.raises(CredentialError, match="machine id"):
        load_from_file(path)
    path.write_text("[]")
    with pytest.raises(CredentialError, match="LP-format"):
        load_from_file(path)


def test_store_rereads_only_when_the_files_change(tmp_path: Path) -> None:
    workdir = logged_in_dir(tmp_path)
    workdir.write_user(new_user("first"))
    store = CredentialStore(tmp_path)
    first = store.current()
    assert store.current() is first and not store.changed()
    workdir.write_user(new_user("second"))
    assert store.changed()
    second = store.current()
    assert not second.same_login(first)
    workdir.remove_user()
    with pytest.raises(CredentialError):
        store.current()
    assert "cache/user is missing" in store.problem
    os.replace(workdir.id_path, tmp_path / "id.bak")
    with pytest.raises(CredentialError):
        store.reload()


def test_a_store_with_a_recheck_period_looks_at_the_files_that_often(tmp_path: Path) -> None:
    workdir = logged_in_dir(tmp_path)
    workdir.write_user(new_user("first"))
    now = [100.0]
    store = CredentialStore(tmp_path, recheck_s=1.0, clock=lambda: now[0])
    first = store.current()
    workdir.write_user(new_user("second"))
    now[0] += 0.5
    assert store.current() is first  # not looked at yet
    now[0] += 0.6
    second = store.current()
    assert not second.same_login(first)
    workdir.write_user(new_user("third"))
    assert not store.reload().same_login(second)  # an auth error re-reads at once
