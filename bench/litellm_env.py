"""Runs in the bench: the LiteLLM proxy baseline — its pinned venv, its config, its process.

LiteLLM lives in its own venv (bench/.litellm-venv, gitignored) so its many dependencies never
touch the project's. The venv is created on demand with `python3 -m venv` and pip; a stamp
file records the pinned version so a later run reuses it. The proxy runs fully offline:
telemetry off, the bundled model-cost map instead of a download, no database.

A user on a multi-core machine runs `litellm --num_workers N` (uvicorn forks N workers on one
listening socket), so the baseline that counts runs one worker per core; the one-worker proxy
runs beside it for the earlier figure. The first completion only proves that one worker is up,
so readiness also waits until every worker has finished importing (their CPU goes quiet).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import time
from pathlib import Path

import aiohttp
import psutil

from bench.procs import BenchError, Owned, descendants, free_port, tail, wait_port

LITELLM_VERSION = "1.106.12"
VENV = Path(__file__).resolve().parent / ".litellm-venv"
STAMP = VENV / ".bench-pinned"
MASTER_KEY = "sk-bench"
MODEL = "bench"
ALL_CORES = "litellm"  # the baseline that counts: one uvicorn worker per core
ONE_WORKER = "litellm_one_worker"  # the earlier figure, kept beside it
INSTALL_TIMEOUT_S = 600.0
READY_TIMEOUT_S = 150.0  # its CLI imports everything before it listens: slow on a busy box
QUIET_TIMEOUT_S = 60.0
QUIET_CPU_S = 0.05  # CPU seconds all workers together may spend per sample once imported
QUIET_SAMPLE_S = 0.5

OFFLINE_ENV = {
    "LITELLM_TELEMETRY": "False",
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # never fetch the cost map from the internet
    "LITELLM_LOG": "ERROR",
    "DISABLE_ADMIN_UI": "True",
    "NO_PROXY": "127.0.0.1,localhost",
}


def venv_ready() -> bool:
    with contextlib.suppress(OSError):
        return (VENV / "bin" / "litellm").is_file() and STAMP.read_text().strip() == (
            LITELLM_VERSION
        )
    return False


async def _run(args: list[str], log_path: Path, timeout_s: float) -> None:
    with log_path.open("ab") as log:
        proc = await asyncio.create_subprocess_exec(
            *args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            async with asyncio.timeout(timeout_s):
                code = await proc.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 9)
            await proc.wait()
            raise BenchError(f"{args[0]} took longer than {timeout_s:.0f}s") from None
    if code != 0:
        raise BenchError(f"{' '.join(args[:4])} failed ({code}):\n{tail(log_path)}")


async def ensure_venv(log_path: Path) -> float:
    """Create the pinned venv if needed; returns the seconds spent (0 when it existed)."""
    if venv_ready():
        return 0.0
    started = time.monotonic()
    python3 = shutil.which("python3")
    if python3 is None:
        raise BenchError("python3 is not on PATH: cannot create the LiteLLM venv")
    print(f"bench: creating {VENV} with litellm[proxy]=={LITELLM_VERSION} (once) ...", flush=True)
    shutil.rmtree(VENV, ignore_errors=True)
    await _run([python3, "-m", "venv", str(VENV)], log_path, 120.0)
    pip = str(VENV / "bin" / "pip")
    await _run(
        [pip, "install", "-q", "--disable-pip-version-check", f"litellm[proxy]=={LITELLM_VERSION}"],
        log_path,
        INSTALL_TIMEOUT_S,
    )
    STAMP.write_text(LITELLM_VERSION + "\n")
    return time.monotonic() - started


def write_config(path: Path, upstream_port: int) -> None:
    """One model routed to the mock OpenAI server; auth on (a master key), no DB, no logging."""
    path.write_text(
        f"""model_list:
  - model_name: {MODEL}
    litellm_params:
      model: openai/{MODEL}
      api_base: http://127.0.0.1:{upstream_port}/v1
      api_key: sk-mock
litellm_settings:
  telemetry: false
  drop_params: true
  set_verbose: false
  turn_off_message_logging: true
general_settings:
  master_key: {MASTER_KEY}
  disable_spend_logs: true
  disable_error_logs: true
"""
    )


class LiteLLMProxy:
    """`litellm --config --num_workers N`: N uvicorn workers on one port."""

    def __init__(self, root: Path, upstream_port: int, workers: int, name: str) -> None:
        self.root = root
        self.upstream_port = upstream_port
        self.workers = max(1, workers)
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = root / "logs" / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self, owned: Owned) -> float:
        """Start it and wait until a real completion passes through; returns the start time."""
        config = self.root / f"{self.name}.yaml"
        write_config(config, self.upstream_port)
        started = time.monotonic()
        args = [str(VENV / "bin" / "litellm"), "--config", str(config)]
        args += ["--host", "127.0.0.1", "--port", str(self.port)]
        args += ["--num_workers", str(self.workers)]
        env = {**OFFLINE_ENV, "HTTP_PROXY": "", "HTTPS_PROXY": "", "ALL_PROXY": ""}
        self.proc = owned.start(args, log_path=self.log_path, env=env, cwd=self.root)
        try:
            await wait_port(self.port, READY_TIMEOUT_S, self.proc)
            await self._first_completion()
        except (BenchError, TimeoutError, aiohttp.ClientError) as exc:
            raise BenchError(f"LiteLLM did not start: {exc}\n{tail(self.log_path)}") from exc
        return time.monotonic() - started

    async def _first_completion(self) -> None:
        body = {"model": MODEL, "messages": [{"role": "user", "content": "hello"}]}
        headers = {"Authorization": f"Bearer {MASTER_KEY}"}
        deadline = time.monotonic() + 30.0
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                url = f"{self.url}/v1/chat/completions"
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.post(url, json=body, headers=headers) as response:
                        if response.status == 200:
                            return
                await asyncio.sleep(0.2)
        raise BenchError("no successful completion through LiteLLM within 30s")

    async def wait_quiet(self) -> float:
        """Until the proxy's processes stop burning CPU (every worker done importing LiteLLM),
        at most QUIET_TIMEOUT_S; returns the seconds waited. Without it the first levels would
        measure a proxy whose second worker is still starting."""
        if self.proc is None:
            return 0.0
        started = time.monotonic()
        last = _cpu_seconds(self.proc.pid)
        while time.monotonic() - started < QUIET_TIMEOUT_S:
            await asyncio.sleep(QUIET_SAMPLE_S)
            now = _cpu_seconds(self.proc.pid)
            if now - last <= QUIET_CPU_S:
                break
            last = now
        return time.monotonic() - started

    def stop(self, owned: Owned) -> None:
        if self.proc is not None:
            owned.stop(self.proc, grace_s=3.0)
            self.proc = None


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and everything below it."""
    total = 0.0
    with contextlib.suppress(psutil.Error):
        for proc in [psutil.Process(pid), *descendants(pid)]:
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                total += times.user + times.system
    return total
