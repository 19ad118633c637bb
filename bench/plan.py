"""Runs in the bench: how long and how hard each scenario runs, full (≤ 5 min) or quick (≤ 60 s)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Ramp:
    """One open-stream ramp (scenario 5): its steps and the slow upstream that keeps every
    stream open while the ramp climbs. The runtime and the cloud path ramp with the same code;
    only the steps and the answer's length differ (see Plan.runtime_ramp, Plan.cloud_ramp)."""

    steps: tuple[int, ...]
    first_token_ms: int
    tokens_per_s: float
    reply_tokens: int
    step_timeout_s: float
    batch: int

    def stream_seconds(self) -> float:
        """How long one slow answer takes upstream (first token, then the reply at its rate)."""
        return self.first_token_ms / 1000 + self.reply_tokens / self.tokens_per_s

    def emulator_env(self) -> dict[str, str]:
        """The emulator's knobs for this slow upstream (its runtime and its cloud side alike)."""
        return {
            "LINGMA_EMULATOR_FIRST_TOKEN_MS": str(self.first_token_ms),
            "LINGMA_EMULATOR_TOKENS_PER_S": str(self.tokens_per_s),
            "LINGMA_EMULATOR_REPLY_TOKENS": str(self.reply_tokens),
        }


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
    scale_steps: tuple[int, ...]  # open-stream ramp through the runtime
    scale_tokens_per_s: float  # slow upstream: tokens per second per stream
    scale_first_token_ms: int
    scale_reply_tokens: int  # long enough that every stream outlives the ramp
    scale_step_timeout_s: float  # a ramp step whose streams do not all open in time ends it
    scale_batch: int  # streams launched at once inside a step
    cloud_scale_steps: tuple[int, ...]  # open-stream ramp through the cloud backend
    cloud_scale_reply_tokens: int  # shorter: it climbs while the runtime ramp's streams end
    session_turns: int
    litellm_one_worker_levels: tuple[int, ...]  # the one-worker proxy, beside the all-cores one
    rate_share_of_peak: float  # open-loop offered rate as a share of lingma-gw's measured peak
    rate_duration_s: float  # measured window of each open-loop run (after `warmup_s`)
    rate_max_outstanding: int  # requests in flight the open-loop generator allows at most
    cloud_levels: tuple[int, ...]  # concurrency levels of the cloud-path comparison
    cloud_duration_s: float
    ceiling_duration_s: float  # the generator against a trivial handler: context, not a claim

    @property
    def runtime_ramp(self) -> Ramp:
        return self._ramp(self.scale_steps, self.scale_reply_tokens)

    @property
    def cloud_ramp(self) -> Ramp:
        return self._ramp(self.cloud_scale_steps, self.cloud_scale_reply_tokens)

    def _ramp(self, steps: tuple[int, ...], reply_tokens: int) -> Ramp:
        return Ramp(
            steps=steps,
            first_token_ms=self.scale_first_token_ms,
            tokens_per_s=self.scale_tokens_per_s,
            reply_tokens=reply_tokens,
            step_timeout_s=self.scale_step_timeout_s,
            batch=self.scale_batch,
        )


FULL = Plan(
    quick=False,
    levels=(1, 16, 64, 256),
    duration_s=2.5,
    warmup_s=0.5,
    max_warmup_s=4.0,
    max_duration_s=5.0,
    loadgen_processes=2,
    multi_process_from=64,
    stream_duration_s=3.0,
    stream_concurrency=4,
    long_reply_tokens=4000,
    scale_steps=(100, 500, 1000, 2000, 3000, 4000, 5000),  # 1,000 a step opens in ~9 s
    scale_tokens_per_s=0.5,
    scale_first_token_ms=500,
    scale_reply_tokens=24,  # 0.5 s + 23 ticks of 2 s: every stream outlives the ramp
    scale_step_timeout_s=15.0,
    scale_batch=250,
    cloud_scale_steps=(100, 500, 1000),
    cloud_scale_reply_tokens=12,  # 0.5 s + 11 ticks of 2 s; over before the runtime's streams
    session_turns=20,
    litellm_one_worker_levels=(64, 256),
    rate_share_of_peak=0.5,
    rate_duration_s=3.0,
    rate_max_outstanding=2048,
    cloud_levels=(1, 64),
    cloud_duration_s=2.0,
    ceiling_duration_s=1.5,
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
    scale_batch=250,
    cloud_scale_steps=(50, 200),
    cloud_scale_reply_tokens=10,  # 0.5 s + 9 ticks of 0.5 s: outlives a climb to 200
    session_turns=20,
    litellm_one_worker_levels=(),
    rate_share_of_peak=0.5,
    rate_duration_s=1.0,
    rate_max_outstanding=2048,
    cloud_levels=(1, 64),
    cloud_duration_s=1.0,
    ceiling_duration_s=1.0,
)
