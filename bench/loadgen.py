"""Runs in the bench (and its load-generator children): closed-loop load, the process pool.

A job is `concurrency` client tasks, each sending one request after the other for a fixed
window; only requests that finish inside the measured window (after a warm-up) count. Jobs
split over several processes run in an `aiomultiprocess.Pool` of spawned interpreters with
uvloop, so the generator is not the bottleneck; all children start on one shared monotonic
instant (CLOCK_MONOTONIC is system-wide on Linux). Open-loop jobs at a fixed rate
(bench/openloop.py) run in the same pool.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import aiohttp
import aiomultiprocess.core
import msgspec
import uvloop
from aiomultiprocess import Pool

from bench.openloop import (
    RateJob,
    RateOutcome,
    RateSummary,
    run_rate_job,
    run_rate_share,
    summarize_rate,
)
from bench.requesters import make_requester
from bench.stats import MAX_ERROR_SAMPLES, percentile
from bench.targets import ChunkMeter, HttpTarget, Requester, Sample, Target

ERROR_PAUSE_S = 0.01  # a failing target must not turn a client loop into a busy spin


class Job(msgspec.Struct, frozen=True):
    target: Target
    concurrency: int
    start_at: float  # time.monotonic() value shared by every child process
    warmup_s: float
    duration_s: float
    timeout_s: float = 30.0


class RequestResult(msgspec.Struct):
    latencies_ms: list[float]
    ttft_ms: list[float]
    chunks: int = 0
    errors: int = 0
    error_samples: list[str] = []


class Summary(msgspec.Struct, omit_defaults=True):
    """What the report shows for one load level."""

    concurrency: int
    requests: int
    errors: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    ttft_p50_ms: float | None = None
    ttft_p99_ms: float | None = None
    chunks_per_s: float | None = None
    processes: int = 1
    error_samples: list[str] = []


def summarize(job: Job, outcomes: Sequence[RequestResult], processes: int) -> Summary:
    latencies = sorted(v for o in outcomes for v in o.latencies_ms)
    ttfts = sorted(v for o in outcomes for v in o.ttft_ms)
    chunks = sum(o.chunks for o in outcomes)
    samples = [s for o in outcomes for s in o.error_samples][:MAX_ERROR_SAMPLES]
    # The direct Lingma and cloud clients always count chunks (chat/answer pushes, envelopes).
    streaming = not isinstance(job.target, HttpTarget) or bool(job.target.marker)
    return Summary(
        concurrency=job.concurrency,
        requests=len(latencies),
        errors=sum(o.errors for o in outcomes),
        rps=round(len(latencies) / job.duration_s, 1),
        p50_ms=round(percentile(latencies, 50), 3),
        p90_ms=round(percentile(latencies, 90), 3),
        p99_ms=round(percentile(latencies, 99), 3),
        mean_ms=round(sum(latencies) / len(latencies), 3) if latencies else 0.0,
        ttft_p50_ms=round(percentile(ttfts, 50), 3) if ttfts else None,
        ttft_p99_ms=round(percentile(ttfts, 99), 3) if ttfts else None,
        chunks_per_s=round(chunks / job.duration_s, 1) if streaming else None,
        processes=processes,
        error_samples=samples,
    )


async def _client_loop(requester: Requester, begin: float, end: float, out: RequestResult) -> None:
    while time.monotonic() < end:
        started = time.monotonic()
        try:
            sample = await requester.once()
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError, RuntimeError) as exc:
            sample = Sample(False, error=f"{type(exc).__name__}: {exc}"[:200])
        finished = time.monotonic()
        if not sample.ok:
            out.errors += 1
            if len(out.error_samples) < MAX_ERROR_SAMPLES:
                out.error_samples.append(sample.error)
            await asyncio.sleep(ERROR_PAUSE_S)
            continue
        if begin <= finished <= end:
            out.latencies_ms.append((finished - started) * 1000.0)
            if sample.ttft_s is not None:
                out.ttft_ms.append(sample.ttft_s * 1000.0)


async def run_job(job: Job) -> RequestResult:
    """Run one share of a job in this process; returns the raw samples."""
    out = RequestResult(latencies_ms=[], ttft_ms=[])
    timeout = aiohttp.ClientTimeout(total=job.timeout_s)
    connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=None)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        meter = ChunkMeter()
        requesters = [make_requester(job.target, session, meter) for _ in range(job.concurrency)]
        await asyncio.sleep(max(0.0, job.start_at - time.monotonic()))
        begin = meter.begin = job.start_at + job.warmup_s
        end = meter.end = begin + job.duration_s
        try:
            async with asyncio.timeout(job.warmup_s + job.duration_s + job.timeout_s + 5):
                await asyncio.gather(*(_client_loop(r, begin, end, out) for r in requesters))
        finally:
            await asyncio.gather(*(r.close() for r in requesters), return_exceptions=True)
    out.chunks = meter.count
    return out


async def _run_share(job_bytes: bytes) -> bytes:
    """The Pool entry point: msgpack in and out keeps pickling cheap and typed."""
    job = msgspec.msgpack.decode(job_bytes, type=Job)
    return msgspec.msgpack.encode(await run_job(job))


def split(total: int, parts: int) -> list[int]:
    """`total` client tasks spread over at most `parts` processes, none empty."""
    parts = max(1, min(parts, total))
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


class LoadGenerator:
    """Runs jobs in this process or, when asked for several, in a warm process pool."""

    START_MARGIN_S = 0.3  # time for every child to receive its share before the start

    def __init__(self, processes: int) -> None:
        self.processes = max(1, processes)
        self._pool: Pool | None = None

    async def __aenter__(self) -> LoadGenerator:
        if self.processes > 1:
            self._pool = Pool(processes=self.processes, loop_initializer=uvloop.new_event_loop)
            await self._pool.__aenter__()
            warm = [self._pool.apply(_run_share, (self._idle_job(),)) for _ in range(4)]
            await asyncio.gather(*warm)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.terminate()
            await self._pool.join()
            self._pool = None
            # aiomultiprocess keeps one multiprocessing Manager process for its namespaces.
            manager = aiomultiprocess.core._manager
            if manager is not None:
                manager.shutdown()
                aiomultiprocess.core._manager = None

    def _idle_job(self) -> bytes:
        job = Job(HttpTarget(url="http://127.0.0.1:1/"), 0, time.monotonic(), 0.0, 0.0)
        return msgspec.msgpack.encode(job)

    async def run(
        self,
        target: Target,
        concurrency: int,
        duration_s: float,
        warmup_s: float,
        processes: int | None = None,
        timeout_s: float = 30.0,
    ) -> Summary:
        wanted = self.processes if processes is None else max(1, processes)
        shares = split(concurrency, wanted if self._pool is not None else 1)
        start_at = time.monotonic() + (self.START_MARGIN_S if len(shares) > 1 else 0.0)
        job = Job(target, concurrency, start_at, warmup_s, duration_s, timeout_s)
        if len(shares) == 1:
            return summarize(job, [await run_job(job)], 1)
        assert self._pool is not None
        parts = [msgspec.structs.replace(job, concurrency=n) for n in shares]
        raw: list[Any] = await asyncio.gather(
            *(self._pool.apply(_run_share, (msgspec.msgpack.encode(p),)) for p in parts)
        )
        outcomes = [msgspec.msgpack.decode(r, type=RequestResult) for r in raw]
        return summarize(job, outcomes, len(shares))

    async def run_at_rate(
        self,
        target: Target,
        rate_per_s: float,
        duration_s: float,
        warmup_s: float,
        *,
        processes: int = 1,
        max_outstanding: int = 1024,
        timeout_s: float = 30.0,
    ) -> RateSummary:
        """Open loop: `rate_per_s` requests per second on a fixed grid, split over processes."""
        shares = max(1, min(processes, self.processes if self._pool is not None else 1))
        start_at = time.monotonic() + (self.START_MARGIN_S if shares > 1 else 0.0)
        job = RateJob(
            target=target,
            rate_per_s=rate_per_s,
            shares=shares,
            share=0,
            start_at=start_at,
            warmup_s=warmup_s,
            duration_s=duration_s,
            max_outstanding=max(1, max_outstanding // shares),
            timeout_s=timeout_s,
        )
        if shares == 1:
            return summarize_rate(job, [await run_rate_job(job)])
        assert self._pool is not None
        parts = [msgspec.structs.replace(job, share=i) for i in range(shares)]
        raw: list[Any] = await asyncio.gather(
            *(self._pool.apply(run_rate_share, (msgspec.msgpack.encode(p),)) for p in parts)
        )
        return summarize_rate(job, [msgspec.msgpack.decode(r, type=RateOutcome) for r in raw])
