"""Runs in the bench: one whole run — start every system, run the scenarios in order, stop all.

Every process is started through `Owned` (own process group) and stopped in `finally`. A
scenario that fails is recorded under `scenario_errors` and the run goes on, so one missing
piece never hides the numbers of the others.
"""

from __future__ import annotations

import asyncio
import os
import time
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from bench import cloud, fixed_rate, keys, litellm_env, scale, scenarios, sessions, streaming
from bench.gateway import BenchGateway, GatewaySetup, make_login_cache
from bench.litellm_env import ALL_CORES, ONE_WORKER, LiteLLMProxy
from bench.loadgen import LoadGenerator
from bench.plan import Plan
from bench.procs import PYTHON, BenchError, Owned, free_port, wait_port

T = TypeVar("T")
SCENARIOS = frozenset(
    {
        "idle",
        "ceiling",
        "non_streaming",
        "fixed_rate",
        "cloud",
        "ttft",
        "sessions",
        "chunks",
        "scale",
        "scale_cloud",
        "keys",
    }
)
# Which gateways (see gateway_setups) each scenario needs.
NEEDS = {
    "idle": {"main"},
    "non_streaming": {"main"},
    "fixed_rate": {"main"},
    "cloud": {"cloud"},
    "ttft": {"main"},
    "sessions": {"main", "no_cache"},
    "chunks": {"long"},
    "scale": {"slow"},
    "scale_cloud": {cloud.SLOW_NAME},
    "keys": {"keys_on", "keys_off"},
}
# The scenarios that need the cloud backend (and the emulator's cloud side).
CLOUD_SCENARIOS = ("cloud", "scale_cloud")
INSTANT = {"LINGMA_EMULATOR_FIRST_TOKEN_MS": "0", "LINGMA_EMULATOR_TOKENS_PER_S": "0"}


def gateway_setups(plan: Plan) -> dict[str, GatewaySetup]:
    """main: instant short answers; no_cache: the same without the session cache; long: 1000
    chunks per answer at full speed; slow: a realistic trickle for the open-stream ramp;
    cloud: instant answers through the cloud backend; cloud_slow: the trickle through it."""
    long_env = {
        **INSTANT,
        "LINGMA_EMULATOR_INSTANT_CHUNKS": "1000",
        "LINGMA_EMULATOR_REPLY_TOKENS": str(plan.long_reply_tokens),
    }
    return {
        "main": GatewaySetup("main", dict(INSTANT), record=True),
        "no_cache": GatewaySetup("no_cache", dict(INSTANT), session_reuse=False, record=True),
        "long": GatewaySetup("long", long_env),
        "slow": GatewaySetup("slow", plan.runtime_ramp.emulator_env()),
        "cloud": cloud.gateway_setup(INSTANT),
        cloud.SLOW_NAME: cloud.gateway_setup(plan.cloud_ramp.emulator_env(), cloud.SLOW_NAME),
        **keys.setups(INSTANT),
    }


def cores() -> int:
    """The CPUs this process may run on: what `nproc` tells a user sizing LiteLLM's workers."""
    return len(os.sched_getaffinity(0))


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
        self.gateways: dict[str, BenchGateway] = {}
        self.litellm: list[LiteLLMProxy] = []
        self.cloud_blocked: str | None = None  # why the cloud path cannot run, once probed
        self.litellm_starting: asyncio.Task[None] | None = None
        self.mock_url: str | None = None
        self.started = time.monotonic()
        self.timings: dict[str, float] = {}
        self.litellm_venv_s = 0.0  # spent creating the LiteLLM venv before the run (prepare)

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
        if not self.compares_litellm:
            return
        if self.plan.quick:
            # Importing LiteLLM alone costs 7-20 s of CPU on this class of machine.
            self.skipped["litellm"] = "the quick run leaves LiteLLM out; `make bench` runs it"
            return
        spent = self.litellm_venv_s or await litellm_env.ensure_venv(self.install_log)
        upstream = int(self.mock_url.rsplit(":", 1)[1])
        proxies = [LiteLLMProxy(self.root, upstream, cores(), ALL_CORES)]
        if cores() > 1 and self.plan.litellm_one_worker_levels and self.wants("non_streaming"):
            proxies.append(LiteLLMProxy(self.root, upstream, 1, ONE_WORKER))
        outcomes = await asyncio.gather(
            *(p.start(self.owned) for p in proxies), return_exceptions=True
        )
        startups: dict[str, float] = {}
        for proxy, outcome in zip(proxies, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                self.errors[proxy.name] = str(outcome)
                proxy.stop(self.owned)
            else:
                startups[proxy.name] = outcome
                self.litellm.append(proxy)
        quiet = await asyncio.gather(*(p.wait_quiet() for p in self.litellm))
        self.results["litellm_setup"] = {
            "version": litellm_env.LITELLM_VERSION,
            "venv_created_s": round(spent, 1),
            "proxies": {
                p.name: {
                    "workers": p.workers,
                    "startup_s": round(startups[p.name], 1),
                    "quiet_after_s": round(q, 1),
                }
                for p, q in zip(self.litellm, quiet, strict=True)
            },
        }

    def litellm_proxy(self, name: str) -> LiteLLMProxy | None:
        return next((p for p in self.litellm if p.name == name), None)

    def stop_litellm(self) -> None:
        for proxy in self.litellm:
            proxy.stop(self.owned)
        self.litellm = []

    async def probe_cloud(self) -> None:
        """Decide once whether the cloud path can run here (issue 17 may not be merged yet)."""
        wanted = [name for name in CLOUD_SCENARIOS if self.wants(name)]
        if not wanted:
            return
        setup = gateway_setups(self.plan)["cloud"]
        self.cloud_blocked = await cloud.unavailable(self.owned, self.root, setup)
        if self.cloud_blocked is not None:
            self.skipped.update(dict.fromkeys(wanted, self.cloud_blocked))

    async def start_gateways(self) -> None:
        cache = await make_login_cache(self.owned, self.root)
        needed = set().union(*(NEEDS.get(s, set()) for s in self.only))
        if self.cloud_blocked is not None:
            needed -= {cloud.NAME, cloud.SLOW_NAME}
        setups = {n: s for n, s in gateway_setups(self.plan).items() if n in needed}
        gateways = {name: BenchGateway(setup, self.root) for name, setup in setups.items()}
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

    @property
    def compares_litellm(self) -> bool:
        """A scenario of this run measures LiteLLM beside lingma-gw."""
        return self.wants("non_streaming") or self.wants("cloud")

    @property
    def install_log(self) -> Path:
        return self.root / "logs" / "litellm-install.log"

    async def prepare(self) -> None:
        """One-time set-up outside the run's budget: the pinned LiteLLM venv on a fresh clone
        (two minutes of pip here) is not a part of any measurement."""
        if self.plan.quick or not self.compares_litellm:
            return
        self.install_log.parent.mkdir(parents=True, exist_ok=True)
        self.litellm_venv_s = await litellm_env.ensure_venv(self.install_log)

    async def start_all(self) -> None:
        """Start everything; LiteLLM keeps starting in the background (see `scenarios`)."""
        started = time.monotonic()
        await asyncio.gather(
            self.guarded("mock_openai", self.start_mock()),
            self.guarded("cloud_probe", self.probe_cloud()),
        )
        await self.guarded("gateways", self.start_gateways())
        self.results["startup_s"] = round(time.monotonic() - started, 1)

    def begin_litellm(self) -> None:
        """Start LiteLLM in the background, once: its CLI and every worker import LiteLLM
        (20-70 s of CPU here), so it starts when the open streams are only trickling to
        their end, and everything timed waits until it is up and quiet."""
        if self.litellm_starting is None:
            starting = self.guarded("litellm", self.start_litellm())
            self.litellm_starting = asyncio.create_task(starting)

    async def scenarios(self) -> None:
        await self.memory_scenarios()
        self.begin_litellm()  # no-op when the ramp already started it
        if self.litellm_starting is not None:
            waited = time.monotonic()
            await self.litellm_starting
            self.results["litellm_waited_s"] = round(time.monotonic() - waited, 1)
        await self.comparison_scenarios()
        await self.streaming_scenarios()

    async def memory_scenarios(self) -> None:
        gw = self.gateways
        if self.wants("idle") and "main" in gw:
            await asyncio.sleep(1.0)  # let the just-started processes settle before sampling
            idle = scale.idle_footprint(gw["main"])
            self.results["idle"] = await self.guarded("idle_footprint", idle)
        runtime_at_top = asyncio.Event()

        def at_top() -> None:
            self.begin_litellm()
            runtime_at_top.set()

        await asyncio.gather(self.runtime_ramp(at_top), self.cloud_ramp(runtime_at_top))
        # Stopping blocks the loop for the gateways' drains: only once both ramps are over.
        self.stop_gateways("slow", cloud.SLOW_NAME)

    async def runtime_ramp(self, at_top: Callable[[], None]) -> None:
        """Scenario 5 through the runtime; `at_top` once its top is sampled (or it cannot run)."""
        try:
            if self.wants("scale") and "slow" in self.gateways:
                ramp = self.plan.runtime_ramp
                opened = scale.open_streams(ramp, self.gateways["slow"], after_ramp=at_top)
                await self.ramp_result("scale", "open_streams", opened)
        finally:
            at_top()

    async def cloud_ramp(self, runtime_at_top: asyncio.Event) -> None:
        """Scenario 5 through the cloud backend. It climbs once the runtime ramp has sampled its
        top: the runtime's streams then only trickle to their end (the bench waits for that
        anyway), and each gateway's RSS is its own processes', so neither ramp moves the
        other's numbers; in the full plan its shorter answers end first, so it costs no time."""
        gateway = self.gateways.get(cloud.SLOW_NAME)
        if not self.wants("scale_cloud") or gateway is None:
            return
        await runtime_at_top.wait()
        opened = scale.open_streams(self.plan.cloud_ramp, gateway)
        await self.ramp_result("scale_cloud", "open_streams_cloud", opened)

    async def ramp_result(self, key: str, step: str, opened: Awaitable[dict[str, Any]]) -> None:
        self.results[key] = await self.guarded(step, opened)
        cut = (self.results.get(key) or {}).get("ramp_cut")
        if cut:
            self.skipped[f"{key}_top"] = cut

    async def comparison_scenarios(self) -> None:
        """Against the baselines: the generator's ceiling, the closed-loop sweep (direct,
        lingma-gw, LiteLLM), the open loop at a fixed rate, the cloud path."""
        plan, load, gw = self.plan, self.load, self.gateways
        if self.wants("ceiling") and self.mock_url is not None:
            ceiling = scenarios.loadgen_ceiling(load, plan, self.mock_url)
            self.results["loadgen_ceiling"] = await self.guarded("loadgen_ceiling", ceiling)
        if self.wants("non_streaming"):
            sweeps = scenarios.build_sweeps(plan, gw.get("main"), self.mock_url, self.litellm)
            comparison = scenarios.non_streaming(load, plan, sweeps)
            self.results["non_streaming"] = await self.guarded("non_streaming", comparison)
        if self.wants("fixed_rate") and "main" in gw:
            peak = _peak_rps((self.results.get("non_streaming") or {}).get("lingma_gw"))
            at_rate = fixed_rate.latency_at_rate(load, plan, gw["main"], peak)
            self.results["fixed_rate"] = await self.guarded("fixed_rate", at_rate)
        if self.wants("cloud") and "cloud" in gw:
            litellm = self.litellm_proxy(ALL_CORES)
            path = cloud.cloud_path(load, plan, gw["cloud"], self.mock_url, litellm)
            self.results["cloud"] = await self.guarded("cloud", path)
        self.stop_litellm()
        self.stop_gateways("cloud")
        if self.wants("keys"):
            named = keys.named_keys(load, plan, gw.get("keys_on"), gw.get("keys_off"))
            self.results["keys"] = await self.guarded("keys", named)
        self.stop_gateways("keys_on", "keys_off")

    async def streaming_scenarios(self) -> None:
        plan, load, gw = self.plan, self.load, self.gateways
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
        if self.litellm_starting is not None:
            self.litellm_starting.cancel()  # its processes are owned: stopped just below
        self.stop_gateways(*self.gateways)
        self.stop_litellm()
        self.owned.stop_all()


def _peak_rps(rows: list[dict[str, Any]] | None) -> float | None:
    return max((float(r["rps"]) for r in rows), default=None) if rows else None
