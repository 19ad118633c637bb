"""`python -m worker.cloud.probe` (the worker side of `doctor --cloud`) against the stand-in."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from emulator.store import WorkDir
from tests.component.emulator_support import CloudEmulator, cloud_emulator, short_dir
from tests.helpers import PYTHON, REPO

pytestmark = pytest.mark.component


@pytest.fixture(scope="module")
def cloud() -> Iterator[CloudEmulator]:
    with cloud_emulator("cldp-") as running:
        yield running


def probe(cloud: CloudEmulator, *extra: str) -> tuple[int, str]:
    args = [PYTHON, "-m", "worker.cloud.probe", "--work-dir", str(cloud.work_dir), *extra]
    run = subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=REPO, check=False)
    return run.returncode, run.stdout + run.stderr


def secrets_of(cloud: CloudEmulator) -> list[str]:
    user = WorkDir(cloud.work_dir).read_user()
    assert user is not None
    return [user.key, user.encrypt_user_info, user.security_oauth_token, user.refresh_token]


def test_probe_reports_models_and_the_chat_wire_shape(cloud: CloudEmulator) -> None:
    code, out = probe(cloud, "--base-url", cloud.base_url, "--chat", "--json")
    assert code == 0, out
    report = json.loads(out)
    models, chat = report["steps"]
    assert models["ok"] and models["status"] == 200 and models["details"]["scenes"]["chat"] > 0
    details = chat["details"]
    assert chat["ok"] and chat["content_type"] == "text/event-stream"
    assert details["envelope"] and details["done_form"] == "bare" and not details["data_space"]
    assert details["answer_chars"] > 0 and details["finish_reason"] == "stop" and details["usage"]
    assert report["credential"]["source"] == "cache/user" and report["credential"]["key_chars"]
    assert not any(secret in out for secret in secrets_of(cloud))  # redacted throughout


def test_probe_names_the_error_code(cloud: CloudEmulator) -> None:
    script = {"rules": [{"cloud_fault": "expired"}]}
    cloud.script_path.write_text(json.dumps(script))
    try:
        code, out = probe(cloud, "--base-url", cloud.base_url, "--chat")
    finally:
        cloud.script_path.write_text('{"rules": []}')
    assert code == 1
    assert "model list: OK" in out and "chat: FAILED - HTTP 403" in out and "(code 105)" in out
    assert not any(secret in out for secret in secrets_of(cloud))


def test_probe_without_a_login() -> None:
    empty = short_dir("cldq-")
    try:
        args = [PYTHON, "-m", "worker.cloud.probe", "--work-dir", str(empty)]
        run = subprocess.run(
            args, capture_output=True, text=True, timeout=60, cwd=REPO, check=False
        )
    finally:
        shutil.rmtree(empty, ignore_errors=True)
    assert run.returncode == 1 and "credential: FAILED" in run.stdout
    assert "lingma.alibabacloud.com (from region default)" in run.stdout
