"""Runs in the bench: added latency at a fixed offered rate (open loop), not at saturation.

At 64 closed-loop clients the gateway is saturated and "added latency" is mostly queueing.
Here lingma-gw and the direct JSON-RPC client each get the same fixed rate, half of lingma-gw's
own peak measured earlier in the same run (the non-streaming sweep), so both run well below
their limits; latency counts from each request's scheduled send time (bench/openloop.py).
Added latency is lingma-gw minus direct at the same percentile.
"""

from __future__ import annotations

from typing import Any

import msgspec

from bench.bodies import GATEWAY_MODEL, PROMPT, openai_target
from bench.gateway import API_KEY, BenchGateway
from bench.loadgen import LoadGenerator
from bench.openloop import RateSummary
from bench.plan import Plan
from bench.targets import LingmaTarget, Target

PROBE_CONCURRENCY = 64  # when no sweep ran before (--only fixed_rate): measure the peak here
REQUEST_TIMEOUT_S = 15.0


async def _peak(load: LoadGenerator, plan: Plan, gateway_target: Target) -> float:
    summary = await load.run(
        gateway_target,
        PROBE_CONCURRENCY,
        plan.duration_s,
        plan.warmup_s,
        processes=plan.loadgen_processes,
        timeout_s=REQUEST_TIMEOUT_S,
    )
    return summary.rps


async def _at_rate(
    load: LoadGenerator, plan: Plan, name: str, target: Target, rate: float
) -> RateSummary:
    summary = await load.run_at_rate(
        target,
        rate,
        plan.rate_duration_s,
        plan.warmup_s,
        processes=plan.loadgen_processes,
        max_outstanding=plan.rate_max_outstanding,
        timeout_s=REQUEST_TIMEOUT_S,
    )
    errors = f" errors={summary.errors} {summary.error_samples[:1]}" if summary.errors else ""
    print(
        f"  {name:<20} rate={summary.offered_rps:<7} achieved={summary.achieved_rps} "
        f"p50={summary.p50_ms} p99={summary.p99_ms} lag_p99={summary.send_lag_p99_ms}{errors}",
        flush=True,
    )
    return summary


async def latency_at_rate(
    load: LoadGenerator, plan: Plan, gateway: BenchGateway, measured_peak_rps: float | None
) -> dict[str, Any]:
    """Direct, then lingma-gw, at the same open-loop rate; their latency difference."""
    gateway_target = openai_target(gateway.url, API_KEY, GATEWAY_MODEL, stream=False)
    source = "non_streaming"
    if not measured_peak_rps:
        measured_peak_rps, source = await _peak(load, plan, gateway_target), "probe_at_64"
    rate = round(measured_peak_rps * plan.rate_share_of_peak, 1)
    if rate <= 0:
        raise ValueError(f"lingma-gw's peak was {measured_peak_rps} req/s: no rate to offer")
    direct_target = LingmaTarget(ws_url=gateway.ws_url(), question=PROMPT)
    direct = await _at_rate(load, plan, "direct_emulator", direct_target, rate)
    via = await _at_rate(load, plan, "lingma_gw", gateway_target, rate)
    return {
        "rate_rps": rate,
        "lingma_gw_peak_rps": measured_peak_rps,
        "peak_source": source,
        "direct_emulator": msgspec.to_builtins(direct),
        "lingma_gw": msgspec.to_builtins(via),
        "added_p50_ms": round(via.p50_ms - direct.p50_ms, 3),
        "added_p90_ms": round(via.p90_ms - direct.p90_ms, 3),
        "added_p99_ms": round(via.p99_ms - direct.p99_ms, 3),
    }
