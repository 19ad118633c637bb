"""Runs in the bench: the headline ratios, the targets met or missed, and latest.json."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import msgspec

RESULTS_DIR = Path(__file__).resolve().parent / "results"
LATEST = RESULTS_DIR / "latest.json"
RATIO_CONCURRENCY = 64


def _get(data: dict[str, Any], *path: str | int) -> Any:
    node: Any = data
    for key in path:
        if isinstance(node, dict) and isinstance(key, str):
            node = node.get(key)
        elif isinstance(node, list) and isinstance(key, int) and -len(node) <= key < len(node):
            node = node[key]
        else:
            return None
    return node


def _row_at(rows: Any, concurrency: int) -> dict[str, Any] | None:
    if not isinstance(rows, list):
        return None
    return next((r for r in rows if r.get("concurrency") == concurrency), None)


def _peak_rps(rows: Any) -> float | None:
    if not isinstance(rows, list) or not rows:
        return None
    return max(float(r["rps"]) for r in rows)


def _min(*values: Any) -> float | None:
    present = [float(v) for v in values if v is not None]
    return min(present) if present else None


def _max(*values: Any) -> float | None:
    present = [float(v) for v in values if v is not None]
    return max(present) if present else None


def _share(numerator: Any, denominator: Any) -> float | None:
    return round(float(numerator) / float(denominator), 2) if numerator and denominator else None


def _rps_at(rows: Any, concurrency: int) -> float | None:
    row = _row_at(rows, concurrency) or {}
    return row.get("rps")


def ratios(results: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers: the keys are a contract (see bench/README.md)."""
    return {
        **_runtime_path(results),
        **_streaming(results),
        **_footprint(results),
        **_cloud_path(results),
        **_named_keys(results),
        **_context(results),
    }


def _runtime_path(results: dict[str, Any]) -> dict[str, Any]:
    """Non-streaming through the runtime: added latency at one client and at a fixed rate,
    throughput against direct and against LiteLLM (all cores; one worker beside it)."""
    ns = results.get("non_streaming") or {}
    added_64 = _row_at(ns.get("added_latency"), RATIO_CONCURRENCY) or {}
    added_1 = _row_at(ns.get("added_latency"), 1) or {}
    gw_peak = _peak_rps(ns.get("lingma_gw"))
    litellm_peak = _peak_rps(ns.get("litellm"))
    one_worker_peak = _peak_rps(ns.get("litellm_one_worker"))
    at_rate = results.get("fixed_rate") or {}
    return {
        "added_p50_ms_at_1": added_1.get("added_p50_ms"),
        "added_p99_ms_at_1": added_1.get("added_p99_ms"),
        "added_p50_ms_at_rate": at_rate.get("added_p50_ms"),
        "added_p99_ms_at_rate": at_rate.get("added_p99_ms"),
        "rate_rps": at_rate.get("rate_rps"),
        "throughput_share_of_direct_at_64": added_64.get("throughput_share_of_direct"),
        "throughput_vs_litellm": _share(gw_peak, litellm_peak),
        "throughput_vs_litellm_one_worker": _share(gw_peak, one_worker_peak),
        "throughput_vs_litellm_at_64": _share(
            _rps_at(ns.get("lingma_gw"), RATIO_CONCURRENCY),
            _rps_at(ns.get("litellm"), RATIO_CONCURRENCY),
        ),
        "lingma_gw_peak_rps": gw_peak,
        "litellm_peak_rps": litellm_peak,
        "litellm_one_worker_peak_rps": one_worker_peak,
        "litellm_workers": _get(results, "litellm_setup", "proxies", "litellm", "workers"),
        # closed loop at 64: mostly queueing once the gateway is saturated (context only)
        "added_p50_ms": added_64.get("added_p50_ms"),
        "added_p99_ms": added_64.get("added_p99_ms"),
    }


def _streaming(results: dict[str, Any]) -> dict[str, Any]:
    ttft = results.get("ttft") or {}
    chunks = results.get("stream_chunks") or {}
    openai_ttft = ttft.get("openai_added_p50_ms")
    anthropic_ttft = ttft.get("anthropic_added_p50_ms")
    openai_rate = chunks.get("openai_chunks_per_s")
    anthropic_rate = chunks.get("anthropic_chunks_per_s")
    return {
        "ttft_added_p50_ms": _max(openai_ttft, anthropic_ttft),  # the worse API
        "ttft_added_p50_ms_openai": openai_ttft,
        "ttft_added_p50_ms_anthropic": anthropic_ttft,
        "stream_chunks_per_s": _min(openai_rate, anthropic_rate),  # the worse API
        "stream_chunks_per_s_openai": openai_rate,
        "stream_chunks_per_s_anthropic": anthropic_rate,
        "stream_chunks_per_s_direct": chunks.get("direct_chunks_per_s"),
    }


def _footprint(results: dict[str, Any]) -> dict[str, Any]:
    return {
        "kib_per_open_stream": _get(results, "scale", "kib_per_open_stream"),
        "max_open_streams_without_error": _get(results, "scale", "max_open_streams_without_error"),
        "open_stream_errors": _get(results, "scale", "errors"),
        "open_streams_ramp_top": _get(results, "scale", "ramp_top"),
        "loadgen_rss_mib_at_top": _top_step(results).get("loadgen_rss_mib"),
        "idle_worker_rss_mib": _get(results, "idle", "max_worker_rss_mib"),
        "idle_front_rss_mib": _get(results, "idle", "max_front_rss_mib"),
        # the same ramp through the cloud backend (context: issue 18 sets no target for it)
        "cloud_kib_per_open_stream": _get(results, "scale_cloud", "kib_per_open_stream"),
        "cloud_open_stream_errors": _get(results, "scale_cloud", "errors"),
    }


def _cloud_path(results: dict[str, Any]) -> dict[str, Any]:
    """Streaming through the cloud backend beside LiteLLM, each over its own direct floor."""
    cloud = results.get("cloud") or {}
    added_1 = _row_at(cloud.get("added_latency"), 1) or {}
    added_64 = _row_at(cloud.get("added_latency"), RATIO_CONCURRENCY) or {}
    litellm_1 = _row_at(cloud.get("litellm_added_latency"), 1) or {}
    return {
        "cloud_throughput_vs_litellm": _share(
            _rps_at(cloud.get("lingma_gw"), RATIO_CONCURRENCY),
            _rps_at(cloud.get("litellm"), RATIO_CONCURRENCY),
        ),
        "cloud_added_p50_ms_at_1": added_1.get("added_p50_ms"),
        "cloud_added_p99_ms_at_1": added_1.get("added_p99_ms"),
        "cloud_throughput_share_of_direct_at_64": added_64.get("throughput_share_of_direct"),
        "cloud_litellm_added_p50_ms_at_1": litellm_1.get("added_p50_ms"),
    }


def _named_keys(results: dict[str, Any]) -> dict[str, Any]:
    """Scenario 9: a named key's own work per request, and end to end (keys on - off)."""
    keys = results.get("keys") or {}
    work = keys.get("per_request") or {}
    added = (keys.get("end_to_end") or {}).get("added_latency")

    def work_ms(fronts: str) -> float | None:
        p50 = (work.get(fronts) or {}).get("p50_us")
        return round(p50 / 1000, 4) if p50 is not None else None

    return {
        "keys_work_p50_ms_1_front": work_ms("fronts_1"),
        "keys_work_p50_ms_2_fronts": work_ms("fronts_2"),
        "keys_added_p50_ms_at_1": (_row_at(added, 1) or {}).get("added_p50_ms"),
        "keys_added_p50_ms_at_64": (_row_at(added, 64) or {}).get("added_p50_ms"),
    }


def _context(results: dict[str, Any]) -> dict[str, Any]:
    gw_peak = _peak_rps(_get(results, "non_streaming", "lingma_gw"))
    return {
        "session_upstream_token_ratio": _get(results, "sessions", "upstream_token_ratio"),
        "loadgen_ceiling_rps": _get(results, "loadgen_ceiling", "max_rps"),
        # One client against a trivial aiohttp handler: the load generator's HTTP round trip,
        # part of every lingma_gw latency and absent from the direct JSON-RPC baseline.
        "loadgen_http_floor_p50_ms_at_1": _get(
            results, "loadgen_ceiling", "http_floor_p50_ms_at_1"
        ),
        "loadgen_headroom_vs_lingma_gw": _headroom(results, gw_peak),
        "loadgen_send_lag_p99_ms_at_rate": _get(
            results, "fixed_rate", "lingma_gw", "send_lag_p99_ms"
        ),
    }


def _top_step(results: dict[str, Any]) -> dict[str, Any]:
    steps = _get(results, "scale", "steps") or []
    return max(steps, key=lambda s: s.get("open", 0)) if steps else {}


def _headroom(results: dict[str, Any], gateway_peak: float | None) -> float | None:
    """How many times the generator's own ceiling exceeds the gateway's best rate (want > 1)."""
    ceiling = _get(results, "loadgen_ceiling", "max_rps")
    if not ceiling or not gateway_peak:
        return None
    return round(float(ceiling) / gateway_peak, 2)


def write(results: dict[str, Any], path: Path = LATEST) -> Path:
    """Atomically: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_bytes(msgspec.json.format(msgspec.json.encode(results), indent=2) + b"\n")
    os.replace(tmp, path)
    return path
