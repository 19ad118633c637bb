"""Runs in the bench: one whole run — start every system, run the scenarios in order, stop all.

Every process is started through `Owned` (own process group) and stopped in `finally`. A
scenario that fails is recorded under `scenario_errors` and the run goes on, so one missing
piece never hides the numbers of the others.
"""

from __future__ import annotations

import asyncio
import time
import traceback
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

from bench import litellm_env, scale, scenarios, sessions, streaming
from bench.gateway import Gateway, GatewaySetup, make_login_cache
from bench.litellm_env import LiteLLMProxy
from bench.loadgen import LoadGenerator
from bench.plan import Plan
from bench.procs import PYTHON, BenchError, Owned, free_port, wait_port

T = TypeVar("T")
SCENARIOS = frozenset({"idle", "ceiling", "non_streaming", "ttft", "sessions", "chunks", "scale"})
# Which gateways (see gateway_setups) each scenario needs.
NEEDS = {
    "idle": {"main"},
    "non_streaming": {"main"},
    "ttft": {"main"},
    "sessions": {"main", "no_cache"},
    "chunks": {"long"},
    "scale": {"slow"},
}
INSTANT = {"LINGMA_EMULATOR_FIRST_TOKEN_MS": "0", "LINGMA_EMULATOR_TOKENS_PER_S": "0"}


def gateway_setups(plan: Plan) -> dict[str, GatewaySetup]:
    """main: instant short answers; no_cache: the same without the session cache; long: 1000
    chunks per answer at full speed; slow: a realistic trickle for the open-stream ramp."""
    long_env = {
        **INSTANT,
        "LINGMA_EMULATOR_INSTANT_CHUNKS": "1000",
        "LINGMA_EMULATOR_REPLY_TOKENS": str(plan.long_reply_tokens),
    }
    slow_env = {
        "LINGMA_EMULATOR_FIRST_TOKEN_MS": str(plan.scale_first_token_ms),
        "LINGMA_EMULATOR_TOKENS_PER_S": str(plan.scale_tokens_per_s),
        "LINGMA_EMULATOR_REPLY_TOKENS": str(plan.scale_reply_tokens),
    }
    return {
        "main": GatewaySetup("main", dict(INSTANT), record=True),
        "no_cache": GatewaySetup("no_cache", dict(INSTANT), session_reuse=False, record=True),
        "long": GatewaySetup("long", long_env),
        "slow": GatewaySetup("slow", slow_env),
    }


class Run:
    def __init__(
        self,
        plan: Plan,
        root: Path,
        owned: Owned,
        load: LoadGenerator,
        only: frozenset[str] = SCENARIOS,
    ) -> None:
        self.plan = plan
        self.only = only
        self.root = root
        self.owned = owned
        self.load = load
        self.results: dict[str, Any] = {}
        self.errors: dict[str, str] = {}
        self.skipped: dict[str, str] = {}
        self.gateways: dict[str, Gateway] = {}
        self.litellm: LiteLLMProxy | None = None
        self.mock_url: str | None = None
        self.started = time.monotonic()
        self.timings: dict[str, float] = {}

    def wants(self, scenario: str) -> bool:
        return scenario in self.only

    async def guarded(self, name: str, step: Awaitable[T]) -> T | None:
        """Run one step; on failure record why and carry on."""
        began = time.monotonic()
        print(f"bench: [{began - self.started:5.1f}s] {name} ...", flush=True)
        try:
            return await step
        except Exception as exc:  # one failed scenario must not lose the others' numbers
            detail = str(exc) or type(exc).__name__
            if not isinstance(exc, BenchError):
                detail += "\n" + traceback.format_exc(limit=4)
            self.errors[name] = detail
            print(f"bench: {name} FAILED: {detail}", flush=True)
            return None
        finally:
            self.timings[name] = round(time.monotonic() - began, 1)
            self.results["timings_s"] = self.timings

    async def start_mock(self) -> None:
        port = free_port()
        args = [PYTHON, "-m", "bench.mock_openai", "--port", str(port)]
        proc = self.owned.start(args, log_path=self.root / "logs" / "mock_openai.log")
        await wait_port(port, 30.0, proc)
        self.mock_url = f"http://127.0.0.1:{port}"

    async def start_litellm(self) -> None:
        if self.mock_url is None:
            raise BenchError("the mock OpenAI server is not running")
        if not self.wants("non_streaming"):
            return
        if self.plan.quick:
            # Importing LiteLLM alone costs 7-20 s of CPU on this class of machine.
            self.skipped["litellm"] = "the quick run leaves LiteLLM out; `make bench` runs it"
            return
        spent = await litellm_env.ensure_venv(self.root / "logs" / "litellm-install.log")
        proxy = LiteLLMProxy(self.root, int(self.mock_url.rsplit(":", 1)[1]))
        startup = await proxy.start(self.owned)
        self.litellm = proxy
        self.results["litellm_setup"] = {
            "version": litellm_env.LITELLM_VERSION,
            "venv_created_s": round(spent, 1),
            "startup_s": round(startup, 1),
            "workers": 1,
        }

    async def start_gateways(self) -> None:
        cache = await make_login_cache(self.owned, self.root)
        needed = set().union(*(NEEDS.get(s, set()) for s in self.only))
        setups = {n: s for n, s in gateway_setups(self.plan).items() if n in needed}
        gateways = {name: Gateway(setup, self.root) for name, setup in setups.items()}
        if not gateways:
            return
        outcomes = await asyncio.gather(
            *(g.start(self.owned, cache) for g in gateways.values()), return_exceptions=True
        )
        for (name, gateway), outcome in zip(gateways.items(), outcomes, strict=True):
            if isinstance(outcome, BaseException):
                self.errors[f"gateway_{name}"] = str(outcome)
                gateway.stop(self.owned)
            else:
                self.gateways[name] = gateway

    def stop_gateways(self, *names: str) -> None:
        """Stop several gateways at once (their graceful drains overlap)."""
        stopping = [self.gateways.pop(n) for n in names if n in self.gateways]
        self.owned.stop_many([g.proc for g in stopping if g.proc is not None], grace_s=8.0)
        for gateway in stopping:
            gateway.proc = None

    async def start_all(self) -> None:
        started = time.monotonic()
        await self.guarded("mock_openai", self.start_mock())
        await asyncio.gather(
            self.guarded("gateways", self.start_gateways()),
            self.guarded("litellm", self.start_litellm()),
        )
        self.results["startup_s"] = round(time.monotonic() - started, 1)

    async def scenarios(self) -> None:
        plan, load, gw = self.plan, self.load, self.gateways
        if self.wants("idle") and "main" in gw:
            await asyncio.sleep(1.0)  # let the just-started processes settle before sampling
            idle = scale.idle_footprint(gw["main"])
            self.results["idle"] = await self.guarded("idle_footprint", idle)
        if self.wants("ceiling") and self.mock_url is not None:
            ceiling = scenarios.loadgen_ceiling(load, plan, self.mock_url)
            self.results["loadgen_ceiling"] = await self.guarded("loadgen_ceiling", ceiling)
        if self.wants("non_streaming"):
            sweeps = scenarios.build_sweeps(gw.get("main"), self.mock_url, self.litellm)
            comparison = scenarios.non_streaming(load, plan, sweeps)
            self.results["non_streaming"] = await self.guarded("non_streaming", comparison)
        if self.litellm is not None:
            self.litellm.stop(self.owned)
        if self.wants("ttft") and "main" in gw:
            ttft = streaming.time_to_first_token(load, plan, gw["main"])
            self.results["ttft"] = await self.guarded("ttft", ttft)
        if self.wants("sessions"):
            await self.session_reuse()
        self.stop_gateways("main", "no_cache")
        if self.wants("chunks") and "long" in gw:
            chunks = streaming.chunk_rate(load, plan, gw["long"])
            self.results["stream_chunks"] = await self.guarded("stream_chunks", chunks)
        self.stop_gateways("long")
        if self.wants("scale") and "slow" in gw:
            ramp = scale.open_streams(plan, gw["slow"])
            self.results["scale"] = await self.guarded("open_streams", ramp)
        self.stop_gateways("slow")

    async def session_reuse(self) -> None:
        main, no_cache = self.gateways.get("main"), self.gateways.get("no_cache")
        if main is None or no_cache is None:
            return
        turns = self.plan.session_turns
        on = await self.guarded("sessions_with_cache", sessions.conversation(main, turns))
        off = await self.guarded("sessions_without_cache", sessions.conversation(no_cache, turns))
        if on is not None and off is not None:
            self.results["sessions"] = sessions.compare(on, off)

    def stop_all(self) -> None:
        self.stop_gateways(*self.gateways)
        if self.litellm is not None:
            self.litellm.stop(self.owned)
        self.owned.stop_all()
