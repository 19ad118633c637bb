"""Runs in the bench's load generator: open-loop load at a fixed offered rate, and its statistics.

Closed-loop clients wait for each answer before sending the next, so a slow answer delays the
requests behind it and they are never measured as late (coordinated omission); at saturation
the "latency" is mostly the queue the clients built themselves. Here every request has a
scheduled send time on a fixed grid (`rate` per second, split over processes with a phase
offset), is sent then whether or not earlier ones have answered, and its latency is counted from
that scheduled time, so a stall shows up in every request it delays. The generator's own
lateness (send time minus scheduled time) is reported beside it.

Only requests scheduled inside the measured window (after the warm-up) count; each one ends as
a latency or an error, none is dropped silently. Requesters are pooled: a request takes an idle
one or creates one, up to `max_outstanding`; beyond that it counts as an error.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import aiohttp
import msgspec

from bench.requesters import make_requester
from bench.stats import MAX_ERROR_SAMPLES, percentile
from bench.targets import ChunkMeter, Requester, Sample, Target

SEND_BATCH_WINDOW_S = 0.0005  # requests due within this much of now go out in the same wake-up


class RateJob(msgspec.Struct, frozen=True):
    target: Target
    rate_per_s: float  # the whole job's offered rate (every share together)
    shares: int  # processes the job is split over
    share: int  # this process's index: its sends are share, share + shares, ...
    start_at: float  # time.monotonic() of send number 0, shared by every process
    warmup_s: float
    duration_s: float
    max_outstanding: int
    timeout_s: float = 30.0


class RateOutcome(msgspec.Struct):
    latencies_ms: list[float]
    send_lags_ms: list[float]
    errors: int = 0
    error_samples: list[str] = []


class RateSummary(msgspec.Struct, omit_defaults=True):
    """What the report shows for one open-loop run."""

    offered_rps: float
    achieved_rps: float
    requests: int  # scheduled inside the window and answered
    errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    send_lag_p50_ms: float  # how late the generator itself sent (part of every latency)
    send_lag_p99_ms: float
    processes: int = 1
    error_samples: list[str] = []


class _Pool:
    """Idle requesters, reused so connections stay warm; new ones up to a bound."""

    def __init__(self, job: RateJob, session: aiohttp.ClientSession) -> None:
        self.job = job
        self.session = session
        self.idle: list[Requester] = []
        self.all: list[Requester] = []
        self.busy = 0

    def take(self) -> Requester | None:
        if self.idle:
            self.busy += 1
            return self.idle.pop()
        if len(self.all) >= self.job.max_outstanding:
            return None
        requester = make_requester(self.job.target, self.session, ChunkMeter())
        self.all.append(requester)
        self.busy += 1
        return requester

    def give_back(self, requester: Requester) -> None:
        self.busy -= 1
        self.idle.append(requester)


def _record(
    out: RateOutcome, counted: bool, sample: Sample, latency_s: float, lag_s: float
) -> None:
    if not counted:
        return
    if not sample.ok:
        out.errors += 1
        if len(out.error_samples) < MAX_ERROR_SAMPLES:
            out.error_samples.append(sample.error)
        return
    out.latencies_ms.append(latency_s * 1000.0)
    out.send_lags_ms.append(lag_s * 1000.0)


async def _send(
    pool: _Pool, requester: Requester, scheduled: float, counted: bool, out: RateOutcome
) -> None:
    sent = time.monotonic()
    try:
        sample = await requester.once()
    except (TimeoutError, aiohttp.ClientError, OSError, ValueError, RuntimeError) as exc:
        sample = Sample(False, error=f"{type(exc).__name__}: {exc}"[:200])
    finally:
        pool.give_back(requester)
    _record(out, counted, sample, time.monotonic() - scheduled, sent - scheduled)


async def run_rate_job(job: RateJob) -> RateOutcome:
    """This process's share of an open-loop job; returns its raw samples."""
    out = RateOutcome(latencies_ms=[], send_lags_ms=[])
    interval = 1.0 / job.rate_per_s
    total = int((job.warmup_s + job.duration_s) * job.rate_per_s)  # bounds the loop
    begin = job.start_at + job.warmup_s
    end = begin + job.duration_s
    timeout = aiohttp.ClientTimeout(total=job.timeout_s)
    connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=None)
    tasks: list[asyncio.Task[None]] = []
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        pool = _Pool(job, session)
        try:
            for number in range(job.share, total, job.shares):
                scheduled = job.start_at + number * interval
                delay = scheduled - time.monotonic()
                if delay > SEND_BATCH_WINDOW_S:
                    await asyncio.sleep(delay)
                counted = begin <= scheduled < end
                requester = pool.take()
                if requester is None:
                    _record(
                        out,
                        counted,
                        Sample(False, error="generator: too many outstanding"),
                        0.0,
                        0.0,
                    )
                    continue
                tasks.append(asyncio.create_task(_send(pool, requester, scheduled, counted, out)))
            async with asyncio.timeout(job.timeout_s + 5):
                await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.gather(*(r.close() for r in pool.all), return_exceptions=True)
    return out


async def run_rate_share(job_bytes: bytes) -> bytes:
    """The Pool entry point (msgpack in and out, like the closed loop's)."""
    job = msgspec.msgpack.decode(job_bytes, type=RateJob)
    return msgspec.msgpack.encode(await run_rate_job(job))


def summarize_rate(job: RateJob, outcomes: Sequence[RateOutcome]) -> RateSummary:
    latencies = sorted(v for o in outcomes for v in o.latencies_ms)
    lags = sorted(v for o in outcomes for v in o.send_lags_ms)
    samples = [s for o in outcomes for s in o.error_samples][:MAX_ERROR_SAMPLES]
    return RateSummary(
        offered_rps=round(job.rate_per_s, 1),
        achieved_rps=round(len(latencies) / job.duration_s, 1),
        requests=len(latencies),
        errors=sum(o.errors for o in outcomes),
        p50_ms=round(percentile(latencies, 50), 3),
        p90_ms=round(percentile(latencies, 90), 3),
        p99_ms=round(percentile(latencies, 99), 3),
        max_ms=round(latencies[-1], 3) if latencies else 0.0,
        send_lag_p50_ms=round(percentile(lags, 50), 3),
        send_lag_p99_ms=round(percentile(lags, 99), 3),
        processes=job.shares,
        error_samples=samples,
    )
