"""Runs in the bench: scenario 5 (open streams against a slow upstream) and 6 (idle footprint).

One ramp serves both paths: through the runtime (the `slow` gateway) and through the cloud
backend (the `cloud_slow` gateway, whose upstream is the emulator's cloud side streaming just
as slowly), each reported with its own KiB per open stream.

Streams are opened in steps up to the plan's maximum, each step in batches (a batch waits for
the previous one to open, so the listeners' accept queues never overflow into SYN retries); at
each step, once every stream has its response headers, the RSS of the front(s) and workers is
sampled with psutil. Memory per open stream is the growth over the idle RSS divided by the
streams open at the top step. Every stream must end with its terminator (`data: [DONE]`) and
status 200, or it counts as an error.

Thousands of streams need thousands of descriptors in the bench (client side), the front, the
worker and the emulator alike: before the ramp each process's soft RLIMIT_NOFILE is raised as
far as its hard limit allows, and a ramp that still would not fit is cut to what fits, with the
reason in the result. The bench's own RSS (the client side of every stream) is sampled at each
step beside the gateway's, so the generator's memory is visible too.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from bench.bodies import GATEWAY_MODEL, openai_body
from bench.gateway import API_KEY, BenchGateway, GatewayPids
from bench.plan import Ramp
from bench.procs import FD_MARGIN, MIB, ensure_fd_limit, rss_bytes, uss_bytes

SETTLE_S = 0.5
DONE = b"data: [DONE]"
MAX_ERROR_SAMPLES = 5


async def idle_footprint(gateway: BenchGateway) -> dict[str, Any]:
    """RSS (and USS) of supervisor, fronts and workers right after start, binary excluded."""
    pids = await gateway.pids()

    def row(pid: int) -> dict[str, Any]:
        return {
            "pid": pid,
            "rss_mib": round(rss_bytes(pid) / MIB, 1),
            "uss_mib": round(uss_bytes(pid) / MIB, 1),
        }

    workers = [row(pid) for pid in pids.workers]
    fronts = [row(pid) for pid in pids.fronts]
    return {
        "supervisor": row(pids.supervisor),
        "fronts": fronts,
        "workers": workers,
        "binaries_emulator": [row(pid) for pid in pids.binaries],
        "max_worker_rss_mib": max((w["rss_mib"] for w in workers), default=None),
        "max_front_rss_mib": max((f["rss_mib"] for f in fronts), default=None),
    }


@dataclass
class StreamBook:
    """Counts shared by every stream task."""

    opened: int = 0
    finished: int = 0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def mark_open(self) -> None:
        self.opened += 1
        self.changed.set()

    def fail(self, why: str) -> None:
        self.errors += 1
        self.changed.set()
        if len(self.error_samples) < MAX_ERROR_SAMPLES:
            self.error_samples.append(why[:200])

    @property
    def open_now(self) -> int:
        return self.opened - self.finished


async def _one_stream(
    session: aiohttp.ClientSession, gateway: BenchGateway, book: StreamBook, body: bytes
) -> None:
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    counted = False
    try:
        async with session.post(
            f"{gateway.url}/v1/chat/completions", data=body, headers=headers
        ) as response:
            if response.status != 200:
                book.fail(f"HTTP {response.status}: {(await response.read())[:120]!r}")
                return
            book.mark_open()
            counted = True
            tail = b""
            async for block in response.content.iter_any():
                tail = (tail + block)[-64:]
            if DONE not in tail:
                book.fail(f"stream ended without [DONE]: {tail!r}")
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        book.fail(f"{type(exc).__name__}: {exc}")
    finally:
        if counted:
            book.finished += 1


def _rss_sample(pids: GatewayPids) -> dict[str, float]:
    fronts = sum(rss_bytes(pid) for pid in pids.fronts)
    workers = sum(rss_bytes(pid) for pid in pids.workers)
    binaries = sum(rss_bytes(pid) for pid in pids.binaries)
    return {
        "front_rss_mib": round(fronts / MIB, 1),
        "workers_rss_mib": round(workers / MIB, 1),
        "gateway_rss_mib": round((fronts + workers) / MIB, 1),
        "emulator_rss_mib": round(binaries / MIB, 1),
        "loadgen_rss_mib": round(rss_bytes(os.getpid()) / MIB, 1),
    }


async def _wait_open(book: StreamBook, launched: int, timeout_s: float) -> None:
    """Until every launched stream has its headers or has failed, at most `timeout_s` in all."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            while book.opened + book.errors < launched:
                book.changed.clear()
                await book.changed.wait()


async def open_streams(
    ramp: Ramp, gateway: BenchGateway, after_ramp: Callable[[], object] | None = None
) -> dict[str, Any]:
    """Ramp to the top step of concurrent slow streams; RSS per step; errors must be 0.

    The same ramp measures the runtime path and the cloud path: only the gateway behind
    `gateway.url` (its account's backend) and the ramp's steps differ.
    A step whose streams do not all open within `step_timeout_s` ends the ramp: the
    shortfall is recorded as stalled streams (errors), never waited for without bound.
    `after_ramp` is called once the top is sampled, while the streams trickle to their end.
    """
    pids = await gateway.pids()
    fd_limits, steps_planned = _make_fd_room(pids, ramp.steps)
    idle = _rss_sample(pids)
    book = StreamBook()
    body = openai_body(GATEWAY_MODEL, stream=True, prompt="tell me a long story")
    steps: list[dict[str, Any]] = []
    tasks: list[asyncio.Task[None]] = []
    started = last_launch = time.monotonic()
    finish_within = ramp.stream_seconds() + ramp.step_timeout_s * len(ramp.steps)
    timeout = aiohttp.ClientTimeout(total=finish_within + 30.0)
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0), timeout=timeout
    ) as session:
        for step in steps_planned:
            step_deadline = time.monotonic() + ramp.step_timeout_s
            while len(tasks) < step and time.monotonic() < step_deadline:
                batch = min(ramp.batch, step - len(tasks))
                tasks += [
                    asyncio.create_task(_one_stream(session, gateway, book, body))
                    for _ in range(batch)
                ]
                last_launch = time.monotonic()
                await _wait_open(book, len(tasks), step_deadline - time.monotonic())
            await asyncio.sleep(SETTLE_S)
            steps.append(
                {
                    "target": step,
                    "open": book.open_now,
                    "errors": book.errors,
                    "stalled": step - book.opened - book.errors,
                    # streams already over: the ramp outlasted one answer, so `open` < target
                    "finished": book.finished,
                    "t_s": round(time.monotonic() - started, 1),
                    **_rss_sample(pids),
                }
            )
            print(f"  open streams ({gateway.setup.name}) {steps[-1]}", flush=True)
            if steps[-1]["stalled"] or book.errors:
                break
        if after_ramp is not None:
            after_ramp()
        # The last streams were launched at `last_launch`; none should outlive one answer's
        # duration after that by more than the slack of a step.
        remaining = last_launch + ramp.stream_seconds() + ramp.step_timeout_s - time.monotonic()
        done, pending = await asyncio.wait(tasks, timeout=max(1.0, remaining))
        for task in pending:
            task.cancel()
            book.fail("stream did not finish within the time an answer takes plus the ramp")
        await asyncio.gather(*pending, return_exceptions=True)
    result = scale_result(idle, steps, book, len(done))
    result["fd_soft_limits"] = fd_limits
    result["ramp_top"] = steps_planned[-1] if steps_planned else 0
    if steps_planned != ramp.steps:
        result["ramp_cut"] = (
            f"descriptor limits {fd_limits} leave room for {steps_planned[-1:]} streams, "
            f"not {ramp.steps[-1]}"
        )
    return result


def _make_fd_room(
    pids: GatewayPids, planned: tuple[int, ...]
) -> tuple[dict[str, int], tuple[int, ...]]:
    """Raise every involved process's descriptor limit for the top step; the steps that fit."""
    needed = max(planned, default=0) + FD_MARGIN
    groups = {
        "bench": [os.getpid()],
        "front": pids.fronts,
        "worker": pids.workers,
        "emulator": pids.binaries,
    }
    limits = {
        name: min((ensure_fd_limit(pid, needed) for pid in group), default=0)
        for name, group in groups.items()
    }
    known = [limit for limit in limits.values() if limit > 0]  # 0: the process is gone
    room = min(known, default=0) - FD_MARGIN
    return limits, tuple(step for step in planned if step <= room)


def scale_result(
    idle: dict[str, float], steps: list[dict[str, Any]], book: StreamBook, done: int
) -> dict[str, Any]:
    clean = [s for s in steps if s["errors"] == 0]
    top = max(steps, key=lambda s: s["open"]) if steps else None
    per_stream = None
    if top is not None and top["open"] > 0:
        growth_mib = top["gateway_rss_mib"] - idle["gateway_rss_mib"]
        per_stream = round(growth_mib * 1024 / top["open"], 2)
    return {
        "idle": idle,
        "steps": steps,
        "completed_streams": done,
        "errors": book.errors,
        "error_samples": book.error_samples,
        "kib_per_open_stream": per_stream,
        # Most streams seen open at once while no stream had failed yet (stalled ones that
        # never opened are not open; they turn into errors when the ramp ends).
        "max_open_streams_without_error": max((s["open"] for s in clean), default=0),
    }
