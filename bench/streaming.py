"""Runs in the bench: scenario 4 — time to first token added over direct, relayed chunks/s.

TTFT runs one stream at a time against an instant upstream, so it is pure path latency.
The chunk rate runs a few parallel long answers that the emulator emits at full speed (1000
chunks each), through the OpenAI and the Anthropic streaming APIs.
"""

from __future__ import annotations

from typing import Any

import msgspec

from bench.bodies import GATEWAY_MODEL, PROMPT, anthropic_target, openai_target
from bench.gateway import API_KEY, BenchGateway
from bench.loadgen import LoadGenerator, Summary
from bench.plan import Plan
from bench.targets import LingmaTarget, Target


async def _measure(
    load: LoadGenerator, plan: Plan, name: str, target: Target, concurrency: int
) -> Summary:
    summary = await load.run(
        target, concurrency, plan.stream_duration_s, plan.warmup_s, processes=1, timeout_s=60.0
    )
    ttft = f"ttft_p50={summary.ttft_p50_ms} ttft_p99={summary.ttft_p99_ms}"
    rate = f"chunks/s={summary.chunks_per_s}" if summary.chunks_per_s is not None else ""
    errors = f" errors={summary.errors} {summary.error_samples[:1]}" if summary.errors else ""
    print(f"  {name:<28} c={concurrency:<3} rps={summary.rps} {ttft} {rate}{errors}", flush=True)
    return summary


def _targets(gateway: BenchGateway) -> dict[str, Target]:
    return {
        "direct_emulator": LingmaTarget(ws_url=gateway.ws_url(), question=PROMPT),
        "openai": openai_target(gateway.url, API_KEY, GATEWAY_MODEL, stream=True),
        "anthropic": anthropic_target(gateway.url, API_KEY, GATEWAY_MODEL),
    }


def _added(value: float | None, base: float | None) -> float | None:
    if value is None or base is None:
        return None
    return round(value - base, 3)


async def time_to_first_token(
    load: LoadGenerator, plan: Plan, gateway: BenchGateway
) -> dict[str, Any]:
    runs = {
        name: await _measure(load, plan, f"ttft {name}", target, 1)
        for name, target in _targets(gateway).items()
    }
    direct = runs["direct_emulator"]
    result: dict[str, Any] = {name: msgspec.to_builtins(s) for name, s in runs.items()}
    for api in ("openai", "anthropic"):
        result[f"{api}_added_p50_ms"] = _added(runs[api].ttft_p50_ms, direct.ttft_p50_ms)
        result[f"{api}_added_p99_ms"] = _added(runs[api].ttft_p99_ms, direct.ttft_p99_ms)
    return result


async def chunk_rate(load: LoadGenerator, plan: Plan, gateway: BenchGateway) -> dict[str, Any]:
    """Relayed SSE chunks per second with long answers emitted at full speed."""
    runs = {
        name: await _measure(load, plan, f"chunks {name}", target, plan.stream_concurrency)
        for name, target in _targets(gateway).items()
    }
    direct = runs["direct_emulator"]
    # The direct client counts non-empty chat/answer pushes: the upstream's own chunk rate.
    direct_rate = direct.chunks_per_s or 0.0
    result: dict[str, Any] = {name: msgspec.to_builtins(s) for name, s in runs.items()}
    result["direct_chunks_per_s"] = direct_rate
    for api in ("openai", "anthropic"):
        rate = runs[api].chunks_per_s or 0.0
        result[f"{api}_chunks_per_s"] = rate
        result[f"{api}_share_of_direct"] = round(rate / direct_rate, 3) if direct_rate else None
    return result
