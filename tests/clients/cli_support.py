"""Test-only: running real client CLIs (Claude Code, Codex, llm) against the test gateway.

Each run gets a clean environment (no variables of the developer's own shell leak in: a real
ANTHROPIC_API_KEY or OPENAI_BASE_URL would point the client elsewhere), a private HOME, a hard
timeout, and its own process group, killed whole if the timeout passes.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.harness import DirectGateway
from tests.helpers import REPO

NODE_BIN = REPO / "tests" / "clients" / "node" / "node_modules" / ".bin"
CLI_TIMEOUT_S = 60.0


@dataclass
class CliRun:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str

    def explain(self) -> str:
        return (
            f"{' '.join(self.args[:3])} ... exited {self.returncode}\n"
            f"--- stdout\n{self.stdout[-4000:]}\n--- stderr\n{self.stderr[-4000:]}"
        )

    def json_lines(self) -> list[dict[str, Any]]:
        """Every stdout line that is a JSON object (CLIs mix in plain warnings)."""
        found = []
        for raw in self.stdout.splitlines():
            line = raw.strip()
            if line.startswith("{"):
                with contextlib.suppress(json.JSONDecodeError):
                    found.append(json.loads(line))
        return found


def node_cli(name: str) -> Path:
    """A CLI installed by `make install` from tests/clients/node/package.json."""
    path = NODE_BIN / name
    if not os.access(path, os.X_OK):
        pytest.skip(
            f"{name} is not installed: `make install` runs "
            "`npm install --prefix tests/clients/node` (needs npm and the npm registry)"
        )
    return path


def clean_env(home: Path, extra: dict[str, str]) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "TERM": "dumb",
        "NO_COLOR": "1",
        **extra,
    }


def run_cli(
    args: Sequence[str],
    *,
    env: dict[str, str],
    cwd: Path,
    timeout: float = CLI_TIMEOUT_S,
) -> CliRun:
    proc = subprocess.Popen(
        list(args),
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(
            f"{args[0]} did not finish within {timeout}s\n--- stdout\n{out[-4000:]}\n"
            f"--- stderr\n{err[-4000:]}"
        ) from None
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # anything the CLI left running
    return CliRun(list(args), proc.returncode, out, err)


def upstream_prompts(gateway: DirectGateway) -> list[str]:
    """What every chat sent upstream, oldest first per account: the runtime's prompt text, or
    the cloud request's `messages` as JSON (cloud backend)."""
    prompts: list[str] = []
    for worker in gateway.workers:
        for record in worker.records():
            if record.get("event") != "cloud":
                prompts.append(str(record.get("text", "")))
            elif isinstance(record.get("body"), dict):
                prompts.append(json.dumps(record["body"].get("messages"), ensure_ascii=False))
    return prompts
