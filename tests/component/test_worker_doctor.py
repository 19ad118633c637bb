"""`lingma-gw doctor`: the probe names, for each open question, the variant the runtime shows.

The doctor runs for real (`python -m worker.doctor`, and once through `lingma-gw doctor`)
against emulators set to each variant: it starts the binary itself when none runs on the
account's work dir, or attaches to the one that does, and writes a redacted transcript.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest

from protocol.specs import WorkerSpec
from tests.component.emulator_support import logged_in_work_dir, start_emulator
from tests.component.worker_support import make_spec
from tests.helpers import PYTHON, ChildProcesses

pytestmark = pytest.mark.component

PACED = {"LINGMA_EMULATOR_TOKENS_PER_S": "400", "LINGMA_EMULATOR_REPLY_TOKENS": "150"}
LINGMA_GW = str(Path(PYTHON).parent / "lingma-gw")


@dataclass(frozen=True)
class Case:
    name: str
    env: dict[str, str]
    expect: dict[str, str]  # question -> the answer must start with this
    evidence: dict[str, str] = field(default_factory=dict)  # question -> evidence contains


CASES = [
    Case(
        "lingma-acp",
        {},
        {
            "handshake": "merged LSP+ACP params accepted",
            "on_connect": "nothing",
            "login": "logged in",
            "clients": "many",
            "acp": "supported",
            "acp_finish": "fields: fullAnswer, reason",
            "acp_think": "thought chunks",
            "pushes_broadcast": "no",
            "legacy_finish": "statusCode 200",
            "legacy_think": "think fences in chat/answer",
            "push_ids": "requests with ids",
            "cancel": "answered",
            "cancel_finish": "reason 'cancelled'",
            "unrelated_pushes": "snapshot/syncAll",
            "machine_token": "no token",
        },
        {"acp_finish": "no statusCode"},
    ),
    Case(
        "vscode-like",
        {
            "LINGMA_EMULATOR_NO_ACP": "1",
            "LINGMA_EMULATOR_PUSH_AS_NOTIFICATION": "1",
            "LINGMA_EMULATOR_THINK_STYLE": "event",
            "LINGMA_EMULATOR_EXTENSION_REGISTER": "1",
        },
        {
            "on_connect": "extension/register request",
            "acp": "not supported",
            "legacy_think": "chat/think events",
            "push_ids": "notifications",
            "cancel": "answered",
            "cancel_finish": "reason 'cancelled'",
        },
        {"acp": "-32601", "cancel": "chat/stop"},
    ),
    Case(
        "broadcast-status-token",
        {
            "LINGMA_EMULATOR_BROADCAST": "1",
            "LINGMA_EMULATOR_ACP_FINISH_STATUS": "1",
            "LINGMA_EMULATOR_REQUIRE_MACHINE_TOKEN": "1",
        },
        {
            "pushes_broadcast": "yes",
            "acp_finish": "fields: fullAnswer, reason, statusCode",
            "machine_token": "required",
        },
        {"acp_finish": "statusCode present"},
    ),
    Case(
        "one-client-silent-cancel",
        {"LINGMA_EMULATOR_SINGLE_CLIENT": "1", "LINGMA_EMULATOR_CANCEL_NO_REPLY": "1"},
        {
            "clients": "one at a time",
            "pushes_broadcast": "unknown",
            "cancel": "not answered",
            "cancel_finish": "reason 'cancelled'",
        },
    ),
    Case(
        "session-new-hangs",
        {"LINGMA_EMULATOR_SESSION_NEW_HANG": "1"},
        {"acp": "session/new hangs", "legacy_finish": "statusCode 200"},
    ),
]


def doctor_spec(root: Path, env: dict[str, str]) -> WorkerSpec:
    spec = make_spec(root, env={**PACED, **env}, setup_timeout_s=1.5, first_token_timeout_s=15.0)
    logged_in_work_dir(Path(spec.work_dir), "doctor-user")
    return spec


def run_doctor(spec: WorkerSpec, root: Path, *flags: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [PYTHON, "-m", "worker.doctor", "--spec", "-", *flags],
        input=msgspec.json.encode(spec),
        capture_output=True,
        cwd=root,
        timeout=90,
        check=False,
    )


def findings(output: bytes) -> tuple[dict[str, Any], dict[str, tuple[str, str]]]:
    report = json.loads(output)
    return report, {f["question"]: (f["answer"], f["evidence"]) for f in report["findings"]}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_the_doctor_names_the_variant(case: Case, sock_dir: Path) -> None:
    spec = doctor_spec(sock_dir, case.env)
    transcript = sock_dir / "transcript.jsonl"
    done = run_doctor(spec, sock_dir, "--chat", "--json", "--transcript", str(transcript))
    assert done.returncode == 0, done.stderr.decode()
    report, found = findings(done.stdout)
    assert report["runtime"] == "started" and report["transcript"] == str(transcript)
    for question, answer in case.expect.items():
        assert found[question][0].startswith(answer), (question, found[question])
    for question, evidence in case.evidence.items():
        assert evidence in found[question][1], (question, found[question])
    lines = [json.loads(line) for line in transcript.read_text().splitlines()]
    assert any(line.get("message", {}).get("method") == "auth/status" for line in lines)
    text = transcript.read_text()
    assert "doctor-user" not in text and '"token":"pt-' not in text  # redacted
    assert transcript.stat().st_mode & 0o777 == 0o600
    # It stopped what it started: the work dir is free for the account's worker again.
    assert (
        "another runtime instance" not in (Path(spec.work_dir) / "logs" / "lingma.log").read_text()
    )


def test_the_doctor_attaches_to_a_running_runtime(children: ChildProcesses, sock_dir: Path) -> None:
    spec = doctor_spec(sock_dir, {})
    running = start_emulator(children, Path(spec.work_dir), env=PACED)
    done = run_doctor(spec, sock_dir, "--json")
    assert done.returncode == 0, done.stderr.decode()
    report, found = findings(done.stdout)
    assert report["runtime"] == "attached" and found["login"][0] == "logged in"
    assert "clients" not in found  # read-only without --chat
    assert "another runtime instance" not in running.log()
    default_transcript = list(sock_dir.glob("lingma-doctor-acct-a-*.jsonl"))
    assert len(default_transcript) == 1


def test_lingma_gw_doctor_builds_the_spec_from_the_config(sock_dir: Path) -> None:
    config = sock_dir / "gw.toml"
    config.write_text(
        "\n".join(
            [
                "[server]",
                f'runtime_dir = "{sock_dir / "rt"}"',
                f'state_dir = "{sock_dir / "st"}"',
                "[lingma]",
                'binary = "lingma-emulator"',
                "[[accounts]]",
                'name = "acct-x"',
                'password = "secret-password"',
                "",
            ]
        )
    )
    done = subprocess.run(
        [LINGMA_GW, "doctor", "acct-x", "--config", str(config)],
        capture_output=True,
        cwd=sock_dir,
        timeout=60,
        check=False,
    )
    out = done.stdout.decode()
    assert done.returncode == 0, done.stderr.decode()
    assert "started the runtime" in out and "login" in out and "logged out" in out
    assert "transcript (redacted):" in out and "secret-password" not in out
    unknown = subprocess.run(
        [LINGMA_GW, "doctor", "nobody", "--config", str(config)],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert unknown.returncode == 1 and b"no account 'nobody'" in unknown.stderr
