"""Runs in the front: the process-wide state every handler reaches through the aiohttp app.

Owned here: the spec, the worker pool, admission control, the metrics registry, the key
table with its limits gate and usage recorder (front/keys.py, front/usage.py), and the serving
state (STARTING → SERVING → DRAINING) that the middleware and /healthz consult.
"""

from __future__ import annotations

import asyncio
import enum
import time
from dataclasses import dataclass, field

from aiohttp import web

from front.admission import Admission
from front.keys import KeyGate, KeyTable
from front.metrics import FrontMetrics
from front.usage import UsageRecorder
from front.worker_pool import WorkerPool
from protocol.specs import FrontSpec


class ServeState(enum.StrEnum):
    STARTING = "starting"
    SERVING = "serving"
    DRAINING = "draining"


@dataclass
class FrontContext:
    spec: FrontSpec
    pool: WorkerPool
    admission: Admission
    metrics: FrontMetrics
    keys: KeyTable
    gate: KeyGate
    usage: UsageRecorder
    started_at: float = field(default_factory=time.time)
    state: ServeState = ServeState.STARTING
    requests_total: int = 0
    failures_total: int = 0
    drain_requested: asyncio.Event = field(default_factory=asyncio.Event)
    drain_grace_s: float = 10.0
    handover: bool = False  # draining because a replacement front already listens

    @classmethod
    def from_spec(cls, spec: FrontSpec) -> FrontContext:
        ctx = cls(
            spec=spec,
            pool=WorkerPool(spec.workers, ping_interval_s=spec.ping_interval_s),
            admission=Admission(spec.max_in_flight, spec.queue_timeout_s),
            metrics=FrontMetrics(),
            keys=KeyTable(spec.keys),
            gate=KeyGate.attach(spec.limits_table, spec.limits_column),
            usage=UsageRecorder(spec.control_socket, spec.index, enabled=spec.usage_record),
        )
        # Gauges read live state at scrape time instead of being kept in step by hand.
        ctx.metrics.in_flight.set_function(lambda: ctx.admission.in_flight)
        ctx.metrics.queued.set_function(lambda: ctx.admission.queued)
        ctx.metrics.ready_workers.set_function(lambda: len(ctx.pool.ready_links()))
        return ctx

    @property
    def name(self) -> str:
        return f"front-{self.spec.index}"

    def request_drain(self, grace_s: float, *, handover: bool = False) -> None:
        self.drain_grace_s = grace_s
        self.handover = handover
        self.drain_requested.set()


CONTEXT = web.AppKey("front_context", FrontContext)
