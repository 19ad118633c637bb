"""Runs in the bench: the headline ratios, the targets met or missed, and latest.json."""

from __future__ import annotations

import os
from collections.abc import Callable
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


def ratios(results: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers: the keys are a contract (see bench/README.md)."""
    non_streaming = results.get("non_streaming") or {}
    added = _row_at(non_streaming.get("added_latency"), RATIO_CONCURRENCY) or {}
    added_c1 = _row_at(non_streaming.get("added_latency"), 1) or {}
    gw_peak = _peak_rps(non_streaming.get("lingma_gw"))
    litellm_peak = _peak_rps(non_streaming.get("litellm"))
    gw_64 = _row_at(non_streaming.get("lingma_gw"), RATIO_CONCURRENCY) or {}
    litellm_64 = _row_at(non_streaming.get("litellm"), RATIO_CONCURRENCY) or {}
    chunks = results.get("stream_chunks") or {}
    return {
        "added_p50_ms": added.get("added_p50_ms"),
        "added_p99_ms": added.get("added_p99_ms"),
        "throughput_vs_litellm": (
            round(gw_peak / litellm_peak, 2) if gw_peak and litellm_peak else None
        ),
        "ttft_added_p50_ms": _get(results, "ttft", "openai_added_p50_ms"),
        "stream_chunks_per_s": _min(
            chunks.get("openai_chunks_per_s"), chunks.get("anthropic_chunks_per_s")
        ),
        "kib_per_open_stream": _get(results, "scale", "kib_per_open_stream"),
        "idle_worker_rss_mib": _get(results, "idle", "max_worker_rss_mib"),
        "max_open_streams_without_error": _get(results, "scale", "max_open_streams_without_error"),
        # context for the headline numbers
        "added_p50_ms_at_1": added_c1.get("added_p50_ms"),
        "added_p99_ms_at_1": added_c1.get("added_p99_ms"),
        "throughput_vs_litellm_at_64": (
            round(gw_64["rps"] / litellm_64["rps"], 2)
            if gw_64.get("rps") and litellm_64.get("rps")
            else None
        ),
        "lingma_gw_peak_rps": gw_peak,
        "litellm_peak_rps": litellm_peak,
        "throughput_share_of_direct_at_64": added.get("throughput_share_of_direct"),
        "ttft_added_p50_ms_anthropic": _get(results, "ttft", "anthropic_added_p50_ms"),
        "stream_chunks_per_s_openai": chunks.get("openai_chunks_per_s"),
        "stream_chunks_per_s_anthropic": chunks.get("anthropic_chunks_per_s"),
        "stream_chunks_per_s_direct": chunks.get("direct_chunks_per_s"),
        "open_stream_errors": _get(results, "scale", "errors"),
        "session_upstream_token_ratio": _get(results, "sessions", "upstream_token_ratio"),
        "loadgen_ceiling_rps": _get(results, "loadgen_ceiling", "max_rps"),
        # One client against a trivial aiohttp handler: the load generator's HTTP round trip,
        # part of every lingma_gw latency and absent from the direct JSON-RPC baseline.
        "loadgen_http_floor_p50_ms_at_1": _get(
            results, "loadgen_ceiling", "http_floor_p50_ms_at_1"
        ),
        "loadgen_headroom_vs_lingma_gw": _headroom(results, gw_peak),
    }


def _headroom(results: dict[str, Any], gateway_peak: float | None) -> float | None:
    """How many times the generator's own ceiling exceeds the gateway's best rate (want > 1)."""
    ceiling = _get(results, "loadgen_ceiling", "max_rps")
    if not ceiling or not gateway_peak:
        return None
    return round(float(ceiling) / gateway_peak, 2)


Check = Callable[[dict[str, Any]], bool | None]


def _at_most(key: str, limit: float) -> Check:
    return lambda r: None if r.get(key) is None else float(r[key]) <= limit


def _at_least(key: str, limit: float) -> Check:
    return lambda r: None if r.get(key) is None else float(r[key]) >= limit


def _streams_ok(r: dict[str, Any]) -> bool | None:
    if r.get("max_open_streams_without_error") is None:
        return None
    return r["max_open_streams_without_error"] >= 2000 and r.get("open_stream_errors") == 0


TARGETS: list[tuple[str, str, Check]] = [
    ("added_p50_ms", "<= 1 ms at 64 concurrent", _at_most("added_p50_ms", 1.0)),
    ("added_p99_ms", "<= 3 ms at 64 concurrent", _at_most("added_p99_ms", 3.0)),
    ("throughput_vs_litellm", ">= 5x LiteLLM", _at_least("throughput_vs_litellm", 5.0)),
    ("ttft_added_p50_ms", "<= 1 ms", _at_most("ttft_added_p50_ms", 1.0)),
    ("stream_chunks_per_s", ">= 50,000 chunks/s", _at_least("stream_chunks_per_s", 50_000)),
    ("max_open_streams_without_error", "2,000 open streams, 0 errors", _streams_ok),
    ("kib_per_open_stream", "<= 25 KiB per open stream", _at_most("kib_per_open_stream", 25.0)),
    ("idle_worker_rss_mib", "<= 80 MiB per idle worker", _at_most("idle_worker_rss_mib", 80.0)),
]


def targets(headline: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"ratio": key, "target": text, "value": headline.get(key), "met": check(headline)}
        for key, text, check in TARGETS
    ]


def write(results: dict[str, Any], path: Path = LATEST) -> Path:
    """Atomically: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_bytes(msgspec.json.format(msgspec.json.encode(results), indent=2) + b"\n")
    os.replace(tmp, path)
    return path
