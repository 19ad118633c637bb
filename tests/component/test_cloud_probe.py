"""`python -m worker.cloud.probe` and `lingma-gw doctor NAME --cloud` against the stand-in.

The doctor hands the probe the account's spec, and the probe finds the base URL the way the
worker does: the configured one, else the runtime's `config/getEndpoint` (a running runtime
emulator with its cloud side), else the next candidate whose model list answers.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from emulator.store import WorkDir
from tests.component.emulator_support import (
    CloudEmulator,
    cloud_emulator,
    logged_in_work_dir,
    short_dir,
    start_emulator,
)
from tests.helpers import PYTHON, REPO, ChildProcesses, free_port

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


def doctor_config(root: Path, work_dir: Path, account: list[str], lingma: list[str]) -> Path:
    """A config whose account `acct` has `work_dir` as its work dir (a link to it)."""
    accounts = root / "state" / "accounts"
    accounts.mkdir(parents=True)
    (accounts / "acct").symlink_to(work_dir)
    lines = ["[server]", f'state_dir = "{root / "state"}"', f'runtime_dir = "{root / "rt"}"']
    lines += ["[lingma]", *lingma, "[[accounts]]", 'name = "acct"', 'backend = "cloud"', *account]
    path = root / "gw.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def doctor(config: Path, *flags: str) -> tuple[int, dict[str, object], str]:
    args = [PYTHON, "-m", "supervisor", "doctor", "acct", "--config", str(config), "--cloud"]
    run = subprocess.run(
        [*args, "--json", *flags], capture_output=True, text=True, timeout=90, cwd=REPO, check=False
    )
    report = json.loads(run.stdout) if run.stdout.strip() else {}
    return run.returncode, report, run.stdout + run.stderr


def test_doctor_cloud_probes_the_configured_base(cloud: CloudEmulator) -> None:
    root = short_dir("cldd-")
    try:
        config = doctor_config(root, cloud.work_dir, [f'cloud_base_url = "{cloud.base_url}"'], [])
        code, report, out = doctor(config, "--chat")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    assert code == 0, out
    assert report["base_url"] == cloud.base_url and report["base_source"] == "cloud_base_url"
    steps = report["steps"]
    assert isinstance(steps, list) and [(s["name"], s["ok"]) for s in steps] == [
        ("model list", True),
        ("chat", True),
    ]
    assert not any(secret in out for secret in secrets_of(cloud))


def test_doctor_cloud_skips_a_base_whose_model_list_fails(cloud: CloudEmulator) -> None:
    """As the worker: the dedicated domain refuses connections, `--endpoint` answers."""
    root = short_dir("cldd-")
    dead = f"http://127.0.0.1:{free_port()}"
    try:
        lingma = [
            f'dedicated_domain_url = "{dead}"',
            f'binary_args = ["--endpoint", "{cloud.base_url}"]',
        ]
        code, report, out = doctor(doctor_config(root, cloud.work_dir, [], lingma))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    assert code == 0, out
    assert report["base_url"] == cloud.base_url and report["base_source"] == "--endpoint"
    skipped = report["skipped"]
    assert isinstance(skipped, list) and len(skipped) == 1 and dead in skipped[0]


def test_doctor_cloud_asks_the_running_runtime_for_its_endpoint(children: ChildProcesses) -> None:
    root = short_dir("cldr-")
    try:
        work_dir = logged_in_work_dir(root / "wd")
        runtime = start_emulator(children, work_dir, env={"LINGMA_EMULATOR_CLOUD": "1"})
        code, report, out = doctor(doctor_config(root, work_dir, [], []), "--chat")
    finally:
        children.kill_all()
        shutil.rmtree(root, ignore_errors=True)
    assert code == 0, out
    assert report["base_url"] == runtime.http_url
    assert report["base_source"] == "runtime config/getEndpoint"


def test_doctor_cloud_refuses_a_transcript(cloud: CloudEmulator) -> None:
    root = short_dir("cldd-")
    try:
        config = doctor_config(root, cloud.work_dir, [], [])
        code, report, out = doctor(config, "--transcript", str(root / "t.jsonl"))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    assert code == 2 and not report and "--transcript goes with the runtime probe" in out
