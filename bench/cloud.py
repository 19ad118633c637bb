"""Runs in the bench: scenario 8 — the cloud path beside LiteLLM, both before an instant SSE mock.

lingma-gw runs one account with `backend = "cloud"` (issue 17) in front of the emulator's cloud
side (lingma-protocol.md §14.15, served on the emulator's HTTP port with LINGMA_EMULATOR_CLOUD=1);
LiteLLM (every core) runs in front of bench/mock_openai.py. Both upstreams answer at once with
OpenAI-style SSE, and each is also called directly as its floor: the bench's own signed client
(bench/cloud_direct.py) and a plain HTTP client. Clients ask for streams on all four, so every
proxy relays SSE from an SSE upstream (the cloud API only streams; a non-streaming LiteLLM
request would reach its upstream as plain JSON, which would not be equal terms). Reported:
req/s at 64 concurrent and added latency at one client, each proxy against its own floor.

Until issue 17 lands the scenario cannot run: `unavailable` says why (the config refuses
`backend = "cloud"`, or the emulator has no cloud side) and the run records it under `skipped`.
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path
from typing import Any

import aiohttp

from bench.bodies import GATEWAY_MODEL, PROMPT, openai_target
from bench.cloud_direct import PING_PATH, read_credential
from bench.gateway import API_KEY, BenchGateway, GatewaySetup, emulator_command
from bench.litellm_env import MASTER_KEY, MODEL, LiteLLMProxy
from bench.loadgen import LoadGenerator
from bench.plan import Plan
from bench.procs import BenchError, Owned, free_port, wait_port
from bench.scenarios import Sweep, compare

NAME = "cloud"
SLOW_NAME = "cloud_slow"  # the open-stream ramp's cloud gateway (bench/scale.py)
# The emulator serves its cloud side (/algo on its HTTP port) only when asked (issue 17).
CLOUD_KNOB = {"LINGMA_EMULATOR_CLOUD": "1"}
CLOUD_MODEL = ""  # the cloud's automatic model choice (§14.7: "" = auto)
PROBE_TIMEOUT_S = 20.0
# Each proxy and the floor it is measured against, under this scenario's result.
FLOORS = {
    "lingma_gw": ("direct_cloud", "added_latency"),
    "litellm": ("direct_mock_openai", "litellm_added_latency"),
}


def gateway_setup(emulator_env: dict[str, str], name: str = NAME) -> GatewaySetup:
    """A gateway whose one account chats through the emulator's cloud side; `emulator_env`
    paces that side (instant here, slow for the open-stream ramp)."""
    return GatewaySetup(name, {**emulator_env, **CLOUD_KNOB}, backend="cloud")


async def unavailable(owned: Owned, root: Path, setup: GatewaySetup) -> str | None:
    """Why the cloud path cannot be measured in this checkout, or None when it can."""
    refused = await BenchGateway(setup, root / "cloud-probe").check_config()
    if refused is not None:
        return f'lingma-gw refuses `backend = "cloud"` (issue 17 not merged?): {refused}'
    if not await _emulator_serves_cloud(owned, root):
        return (
            f"the emulator has no cloud side: with LINGMA_EMULATOR_CLOUD=1, GET {PING_PATH} on "
            "its HTTP port does not answer `pong`"
        )
    return None


async def _emulator_serves_cloud(owned: Owned, root: Path) -> bool:
    """Start a throw-away emulator and ask its HTTP port for the cloud's ping (§14.3)."""
    work_dir = root / "cloud-probe" / "emulator"
    work_dir.mkdir(parents=True, exist_ok=True)
    socket_port, http_port = free_port(), free_port()
    args = [*emulator_command(), "start", "--workDir", str(work_dir)]
    args += ["--socketPort", str(socket_port), "--httpPort", str(http_port)]
    log_path = root / "logs" / "cloud-probe-emulator.log"
    proc = owned.start(args, log_path=log_path, env=CLOUD_KNOB)
    try:
        await wait_port(http_port, PROBE_TIMEOUT_S, proc)
        timeout = aiohttp.ClientTimeout(total=5.0)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                url = f"http://127.0.0.1:{http_port}{PING_PATH}"
                async with session.get(url) as response:
                    return response.status == 200 and (await response.text()).strip() == "pong"
        return False
    finally:
        owned.stop(proc)


def build_sweeps(
    gateway: BenchGateway, mock_url: str | None, litellm: LiteLLMProxy | None
) -> list[Sweep]:
    if not gateway.cloud_url:
        raise BenchError(f"gateway {gateway.setup.name} has no cloud backend")
    floor = read_credential(gateway.work_dir, gateway.cloud_url, CLOUD_MODEL, PROMPT)
    sweeps = [
        Sweep("direct_cloud", floor),
        Sweep("lingma_gw", openai_target(gateway.url, API_KEY, GATEWAY_MODEL, stream=True)),
    ]
    if mock_url is not None and litellm is not None:
        sweeps.append(
            Sweep("direct_mock_openai", openai_target(mock_url, "sk-mock", MODEL, stream=True))
        )
        sweeps.append(Sweep("litellm", openai_target(litellm.url, MASTER_KEY, MODEL, stream=True)))
    return sweeps


async def cloud_path(
    load: LoadGenerator,
    plan: Plan,
    gateway: BenchGateway,
    mock_url: str | None,
    litellm: LiteLLMProxy | None,
) -> dict[str, Any]:
    """The four systems at the plan's cloud levels, streaming, interleaved level by level."""
    sweeps = build_sweeps(gateway, mock_url, litellm)
    cloud_plan = dataclasses.replace(
        plan, levels=plan.cloud_levels, duration_s=plan.cloud_duration_s
    )
    result = await compare(load, cloud_plan, sweeps, FLOORS)
    result["stream"] = True
    result["litellm_workers"] = litellm.workers if litellm is not None else None
    return result
