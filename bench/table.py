"""Runs in the bench: the table printed at the end of a run (latest.json has everything)."""

from __future__ import annotations

from typing import Any

from bench.thresholds import TARGETS


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.3f}".rstrip("0").rstrip(".") if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


NON_STREAMING_COLUMNS = (
    ("system", "", 20),
    ("conc", "concurrency", 5),
    ("req/s", "rps", 9),
    ("p50 ms", "p50_ms", 9),
    ("p90 ms", "p90_ms", 9),
    ("p99 ms", "p99_ms", 9),
    ("errors", "errors", 7),
)


def _system_rows(section: dict[str, Any], systems: tuple[str, ...]) -> list[str]:
    def line(cells: list[str]) -> str:
        first, *rest = cells
        widths = [w for _, _, w in NON_STREAMING_COLUMNS]
        return f"  {first:<{widths[0]}}" + "".join(
            f" {c:>{w}}" for c, w in zip(rest, widths[1:], strict=True)
        )

    lines = [line([title for title, _, _ in NON_STREAMING_COLUMNS])]
    for system in systems:
        for row in section.get(system) or []:
            cells = [_fmt(row.get(key)) for _, key, _ in NON_STREAMING_COLUMNS[1:]]
            lines.append(line([system, *cells]))
    return lines


def _non_streaming_rows(results: dict[str, Any]) -> list[str]:
    section = results.get("non_streaming") or {}
    workers = (results.get("ratios") or {}).get("litellm_workers")
    title = "non-streaming /v1/chat/completions (closed loop, instant upstream"
    title += f"; litellm = {workers} workers)" if workers else ")"
    systems = ("direct_emulator", "lingma_gw", "direct_mock_openai", "litellm")
    return ["", title, *_system_rows(section, (*systems, "litellm_one_worker"))]


def _fixed_rate_rows(results: dict[str, Any]) -> list[str]:
    at_rate = results.get("fixed_rate") or {}
    if not at_rate:
        return []
    lines = ["", f"open loop at {_fmt(at_rate.get('rate_rps'))} req/s (half lingma-gw's peak)"]
    for name in ("direct_emulator", "lingma_gw"):
        row = at_rate.get(name) or {}
        lines.append(
            f"  {name:<20} achieved {_fmt(row.get('achieved_rps'))} req/s, "
            f"p50 {_fmt(row.get('p50_ms'))} / p99 {_fmt(row.get('p99_ms'))} ms, "
            f"{row.get('errors', 0)} errors, send lag p99 {_fmt(row.get('send_lag_p99_ms'))} ms"
        )
    return lines


def _cloud_rows(results: dict[str, Any]) -> list[str]:
    cloud = results.get("cloud") or {}
    if not cloud:
        return []
    systems = ("direct_cloud", "lingma_gw", "direct_mock_openai", "litellm")
    title = "cloud path, streaming (instant SSE upstreams; lingma_gw = cloud backend)"
    return ["", title, *_system_rows(cloud, systems)]


def _keys_rows(results: dict[str, Any]) -> list[str]:
    keys = results.get("keys") or {}
    if not keys:
        return []
    lines = ["", "named keys: key check + limits + ledger row (bench/keys.py)"]
    for fronts, row in (keys.get("per_request") or {}).items():
        if isinstance(row, dict):
            cells = ", ".join(f"{k} {_fmt(v)}" for k, v in row.items())
            lines.append(f"  per request, {fronts.replace('_', ' ')}: {cells}")
    for row in (keys.get("end_to_end") or {}).get("added_latency") or []:
        diffs = ", ".join(_fmt(d) for d in row["pair_diffs_p50_ms"])
        lines.append(
            f"  end to end, {row['concurrency']} clients: added p50 {_fmt(row['added_p50_ms'])} ms "
            f"(median of on - off per pair: {diffs})"
        )
    return lines


def _header(results: dict[str, Any]) -> list[str]:
    meta = results.get("meta") or {}
    mode = "quick" if (meta.get("plan") or {}).get("quick") else "full"
    return [
        "",
        f"lingma-gw bench ({mode}, commit {meta.get('commit') or '?'}): {meta.get('cpus')} CPUs, "
        f"load average {meta.get('load_average_at_start')} at start, "
        f"{meta.get('load_average_at_end')} at end; the emulator stands in for Lingma",
    ]


def _streaming_rows(results: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    ttft = results.get("ttft") or {}
    if ttft:
        cells = [
            f"{name} {_fmt((ttft.get(name) or {}).get('ttft_p50_ms'))} ms"
            for name in ("direct_emulator", "openai", "anthropic")
        ]
        lines.append("  TTFT p50, one stream at a time:  " + " | ".join(cells))
    chunks = results.get("stream_chunks") or {}
    if chunks:
        cells = [
            f"{name} {_fmt(chunks.get(f'{name}_chunks_per_s'))}"
            for name in ("direct", "openai", "anthropic")
        ]
        lines.append("  relayed chunks/s, long answers:  " + " | ".join(cells))
    return ["", "streaming", *lines] if lines else []


# Each open-stream ramp (scenario 5): its key in the results and the title it prints under.
RAMPS = (
    ("scale", "open streams (slow upstream)"),
    ("scale_cloud", "open streams through the cloud backend (slow cloud upstream)"),
)


def _scale_rows(results: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for key, title in RAMPS:
        lines += _ramp_rows(results.get(key) or {}, title)
    return lines


def _ramp_rows(scale: dict[str, Any], title: str) -> list[str]:
    steps = scale.get("steps") or []
    if not steps:
        return []
    lines = ["", f"{title}: open / errors / front + workers RSS / bench RSS"]
    idle = (scale.get("idle") or {}).get("gateway_rss_mib")
    lines.append(
        f"  idle: {_fmt(idle)} MiB; {_fmt(scale.get('kib_per_open_stream'))} KiB per stream"
    )
    lines += [
        f"  {s['target']:>5} launched: {s['open']:>5} open, {s['errors']} errors, "
        f"{s['stalled']} stalled, {_fmt(s['gateway_rss_mib'])} MiB / "
        f"{_fmt(s.get('loadgen_rss_mib'))} MiB"
        for s in steps
    ]
    return lines


def _footprint_rows(results: dict[str, Any]) -> list[str]:
    idle = results.get("idle") or {}
    if not idle:
        return []
    rows = [("supervisor", idle.get("supervisor") or {})]
    rows += [(f"front {i}", f) for i, f in enumerate(idle.get("fronts") or [])]
    rows += [(f"worker {i}", w) for i, w in enumerate(idle.get("workers") or [])]
    rows += [
        (f"emulator {i} (not ours)", b) for i, b in enumerate(idle.get("binaries_emulator") or [])
    ]
    cells = [f"{name} {_fmt(row.get('rss_mib'))}" for name, row in rows]
    return ["", "idle RSS MiB: " + " | ".join(cells)]


def _session_rows(results: dict[str, Any]) -> list[str]:
    sessions = results.get("sessions") or {}
    if not sessions:
        return []
    on, off = sessions["with_cache"], sessions["without_cache"]
    return [
        "",
        f"session reuse, {on['turns']}-turn conversation: {on['upstream_tokens']} tokens sent "
        f"upstream with the cache, {off['upstream_tokens']} without",
    ]


def render(results: dict[str, Any]) -> str:
    lines = _header(results)
    lines += _non_streaming_rows(results)
    lines += _fixed_rate_rows(results)
    lines += _cloud_rows(results)
    lines += _keys_rows(results)
    lines += _streaming_rows(results)
    lines += _scale_rows(results)
    lines += _footprint_rows(results)
    lines += _session_rows(results)
    lines += ["", "headline ratios and targets"]
    for item in results.get("targets") or []:
        met = {True: "MET", False: "missed", None: "not measured"}[item["met"]]
        value = _fmt(item["value"])
        lines.append(f"  {item['ratio']:<34} {value:>10}   {item['target']:<36} {met}")
    lines += ["", "context"]
    headline = results.get("ratios") or {}
    shown = {target.key for target in TARGETS}
    lines += [f"  {k:<34} {_fmt(v):>10}" for k, v in headline.items() if k not in shown]
    skipped = results.get("skipped") or {}
    if skipped:
        lines += ["", "left out of this run"]
        lines += [f"  {name}: {why}" for name, why in skipped.items()]
    errors = results.get("scenario_errors") or {}
    if errors:
        lines += ["", "scenarios that could not run (details in latest.json)"]
        lines += [
            f"  {name}: {(why.splitlines() or [''])[0][:150]}" for name, why in errors.items()
        ]
    return "\n".join(lines)
