"""Runs in the bench: how long and how hard each scenario runs, full (≤ 5 min) or quick (≤ 60 s)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class Plan:
    quick: bool
    levels: tuple[int, ...]  # concurrency levels of the non-streaming comparison
    duration_s: float  # measured window per level
    warmup_s: float  # discarded start of each level
    max_warmup_s: float  # cap when a slow system (LiteLLM at 256) needs longer to fill up
    max_duration_s: float  # cap of the window stretched for slow systems (several latencies)
    loadgen_processes: int  # aiomultiprocess children at high concurrency
    multi_process_from: int  # concurrency from which the load is split over processes
    stream_duration_s: float  # TTFT and chunk-rate windows
    stream_concurrency: int  # parallel long answers for the relayed-chunk rate
    long_reply_tokens: int  # words in the long answer (the emulator splits it in 1000 chunks)
    scale_steps: tuple[int, ...]  # open-stream ramp
    scale_tokens_per_s: float  # slow upstream: tokens per second per stream
    scale_first_token_ms: int
    scale_reply_tokens: int  # long enough that every stream outlives the ramp
    scale_step_timeout_s: float  # a ramp step whose streams do not all open in time ends it
    session_turns: int


FULL = Plan(
    quick=False,
    levels=(1, 16, 64, 256),
    duration_s=3.0,
    warmup_s=0.5,
    max_warmup_s=6.0,
    max_duration_s=6.0,
    loadgen_processes=2,
    multi_process_from=64,
    stream_duration_s=3.0,
    stream_concurrency=4,
    long_reply_tokens=4000,
    scale_steps=(100, 250, 500, 1000, 1500, 2000),
    scale_tokens_per_s=2.0,
    scale_first_token_ms=500,
    scale_reply_tokens=50,
    scale_step_timeout_s=10.0,
    session_turns=20,
)

QUICK = Plan(
    quick=True,
    levels=(1, 64),
    duration_s=1.0,
    warmup_s=0.3,
    max_warmup_s=2.5,
    max_duration_s=2.5,
    loadgen_processes=2,
    multi_process_from=64,
    stream_duration_s=1.0,
    stream_concurrency=4,
    long_reply_tokens=4000,
    scale_steps=(100, 250, 500),
    scale_tokens_per_s=2.0,
    scale_first_token_ms=500,
    scale_reply_tokens=12,
    scale_step_timeout_s=4.0,
    session_turns=20,
)
