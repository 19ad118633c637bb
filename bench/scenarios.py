"""Runs in the bench: the non-streaming comparison (scenarios 1-3) and the generator's ceiling.

At every concurrency level the systems run back to back — direct to the emulator, lingma-gw,
direct to the mock OpenAI server, LiteLLM on every core, LiteLLM with one worker (at its own
subset of levels) — so slow drift of a shared machine hits them alike. Added latency is a proxy
minus its direct floor at the same level.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec

from bench.bodies import GATEWAY_MODEL, PROMPT, openai_target, trivial_target
from bench.gateway import API_KEY, BenchGateway
from bench.litellm_env import ALL_CORES, MASTER_KEY, MODEL, ONE_WORKER, LiteLLMProxy
from bench.loadgen import LoadGenerator, Summary
from bench.plan import Plan
from bench.targets import LingmaTarget, Target

SUMMARY_FIELDS = ("rps", "p50_ms", "p90_ms", "p99_ms")
REQUEST_TIMEOUT_S = 15.0  # a request slower than this counts as an error (LiteLLM at 256: ~7 s)


@dataclass
class Sweep:
    """One system's summaries across the concurrency levels, fed level by level."""

    name: str
    target: Target
    levels: list[Summary] = field(default_factory=list)
    only_at: frozenset[int] | None = None  # None: every level of the plan

    def runs_at(self, concurrency: int) -> bool:
        return self.only_at is None or concurrency in self.only_at

    def window_for(self, plan: Plan, concurrency: int) -> tuple[float, float]:
        """(warm-up, measured window): a slow system (LiteLLM at 256) gets both stretched to a
        few of its expected latencies, estimated from the previous level, within the caps."""
        if not self.levels or self.levels[-1].rps <= 0:
            return plan.warmup_s, plan.duration_s
        latency = concurrency / self.levels[-1].rps
        warmup = min(plan.max_warmup_s, max(plan.warmup_s, 1.5 * latency))
        duration = min(plan.max_duration_s, max(plan.duration_s, 3.0 * latency))
        return warmup, duration

    def at(self, concurrency: int) -> Summary | None:
        return next((s for s in self.levels if s.concurrency == concurrency), None)


def processes_for(plan: Plan, concurrency: int) -> int:
    return plan.loadgen_processes if concurrency >= plan.multi_process_from else 1


async def run_level(load: LoadGenerator, plan: Plan, sweep: Sweep, concurrency: int) -> Summary:
    warmup, duration = sweep.window_for(plan, concurrency)
    summary = await load.run(
        sweep.target,
        concurrency,
        duration,
        warmup,
        processes=processes_for(plan, concurrency),
        timeout_s=REQUEST_TIMEOUT_S,
    )
    sweep.levels.append(summary)
    return summary


def build_sweeps(
    plan: Plan, gateway: BenchGateway | None, mock_url: str | None, proxies: list[LiteLLMProxy]
) -> list[Sweep]:
    sweeps: list[Sweep] = []
    if gateway is not None:
        sweeps.append(
            Sweep("direct_emulator", LingmaTarget(ws_url=gateway.ws_url(), question=PROMPT))
        )
        target = openai_target(gateway.url, API_KEY, GATEWAY_MODEL, stream=False)
        sweeps.append(Sweep("lingma_gw", target))
    if mock_url is not None:
        sweeps.append(
            Sweep("direct_mock_openai", openai_target(mock_url, "sk-mock", MODEL, stream=False))
        )
    for proxy in proxies:
        target = openai_target(proxy.url, MASTER_KEY, MODEL, stream=False)
        only = frozenset(plan.litellm_one_worker_levels) if proxy.name == ONE_WORKER else None
        sweeps.append(Sweep(proxy.name, target, only_at=only))
    return sweeps


# Each proxy and the direct floor its added latency is measured against.
FLOORS = {
    "lingma_gw": ("direct_emulator", "added_latency"),
    ALL_CORES: ("direct_mock_openai", "litellm_added_latency"),
    ONE_WORKER: ("direct_mock_openai", "litellm_one_worker_added_latency"),
}


async def non_streaming(load: LoadGenerator, plan: Plan, sweeps: list[Sweep]) -> dict[str, Any]:
    """Scenarios 1-3: every system at every level, interleaved level by level."""
    result = await compare(load, plan, sweeps, FLOORS)
    direct = next((s.target for s in sweeps if isinstance(s.target, LingmaTarget)), None)
    result["direct_flow"] = direct.flow if direct is not None else None
    return result


async def compare(
    load: LoadGenerator, plan: Plan, sweeps: list[Sweep], floors: dict[str, tuple[str, str]]
) -> dict[str, Any]:
    """Every sweep at each of the plan's levels, level by level; then each proxy's added
    latency over its floor (`floors`: proxy -> (floor, result key))."""
    for concurrency in plan.levels:
        for sweep in sweeps:
            if not sweep.runs_at(concurrency):
                continue
            summary = await run_level(load, plan, sweep, concurrency)
            print(f"  {sweep.name:<20} c={concurrency:<4} {_line(summary)}", flush=True)
    result: dict[str, Any] = {s.name: [_plain(x) for x in s.levels] for s in sweeps}
    by_name = {s.name: s for s in sweeps}
    for proxy, (floor, key) in floors.items():
        result[key] = added_latency(plan, by_name.get(proxy), by_name.get(floor))
    return result


def added_latency(plan: Plan, proxy: Sweep | None, direct: Sweep | None) -> list[dict[str, Any]]:
    if proxy is None or direct is None:
        return []
    rows = []
    for concurrency in plan.levels:
        via, base = proxy.at(concurrency), direct.at(concurrency)
        if via is None or base is None:
            continue
        rows.append(
            {
                "concurrency": concurrency,
                "added_p50_ms": round(via.p50_ms - base.p50_ms, 3),
                "added_p90_ms": round(via.p90_ms - base.p90_ms, 3),
                "added_p99_ms": round(via.p99_ms - base.p99_ms, 3),
                "throughput_share_of_direct": round(via.rps / base.rps, 3) if base.rps else None,
            }
        )
    return rows


async def loadgen_ceiling(load: LoadGenerator, plan: Plan, mock_url: str) -> dict[str, Any]:
    """The generator against the smallest aiohttp handler: what it can drive at most, and (at
    one client) the HTTP round trip every HTTP proxy pays on top of the direct JSON-RPC client."""
    levels = []
    for concurrency in sorted({1, 64, plan.levels[-1]}):
        summary = await load.run(
            trivial_target(mock_url),
            concurrency,
            plan.ceiling_duration_s,
            plan.warmup_s,
            processes=processes_for(plan, concurrency),
        )
        print(f"  {'loadgen_ceiling':<20} c={concurrency:<4} {_line(summary)}", flush=True)
        levels.append(_plain(summary))
    single = next(level for level in levels if level["concurrency"] == 1)
    return {
        "levels": levels,
        "max_rps": max(level["rps"] for level in levels),
        "http_floor_p50_ms_at_1": single["p50_ms"],
    }


def _line(summary: Summary) -> str:
    text = " ".join(f"{name}={getattr(summary, name)}" for name in SUMMARY_FIELDS)
    if summary.errors:
        text += f" errors={summary.errors} ({summary.error_samples[:1]})"
    return text


def _plain(summary: Summary) -> dict[str, Any]:
    result: dict[str, Any] = msgspec.to_builtins(summary)
    return result
