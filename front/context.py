"""Runs in the front: the process-wide state every handler reaches through the aiohttp app.

Owned here: the spec, the worker pool, admission control, the metrics registry, the key
table with its limits gate and usage recorder (front/keys.py, front/usage.py), the keys of
per-request values (request id, arrival time, affinity), and the serving state (STARTING ->
SERVING -> HANDING_OVER or DRAINING) that the middleware, /healthz and the supervisor's Pong
read; it changes only through `move_to`, which checks the edge.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from dataclasses import dataclass, field

from aiohttp import web

from front.admission import Admission
from front.keys import KeyGate, KeyTable
from front.metrics import FrontMetrics
from front.usage import UsageRecorder
from front.worker_pool import WorkerPool
from protocol.specs import FrontSpec

log = logging.getLogger(__name__)


class ServeState(enum.StrEnum):
    STARTING = "starting"
    SERVING = "serving"
    # A replacement front listens already (reload): this one stopped listening and serves what
    # still arrives on its open connections, closing each after its reply.
    HANDING_OVER = "handing_over"
    DRAINING = "draining"  # shutting down: new requests get 503, in-flight ones finish

    @property
    def closing(self) -> bool:
        """Every reply closes its connection, so the client's next request goes elsewhere."""
        return self in (ServeState.HANDING_OVER, ServeState.DRAINING)


ALLOWED_FROM: dict[ServeState, frozenset[ServeState]] = {
    ServeState.SERVING: frozenset({ServeState.STARTING}),
    ServeState.HANDING_OVER: frozenset({ServeState.SERVING}),
    ServeState.DRAINING: frozenset({ServeState.STARTING, ServeState.SERVING}),
}


@dataclass(frozen=True)
class DrainOrder:
    """How the front was asked to stop: within `grace_s`, handing over to a replacement or not."""

    grace_s: float
    handover: bool = False


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
    drain_order: DrainOrder | None = None  # set once a stop was asked for (the last one wins)
    drain_requested: asyncio.Event = field(default_factory=asyncio.Event)

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

    def move_to(self, new: ServeState) -> None:
        old = self.state
        if new is old:
            return
        if old not in ALLOWED_FROM[new]:
            raise RuntimeError(f"{self.name}: {old} -> {new} is not allowed")
        self.state = new
        log.info("%s %s -> %s", self.name, old.value, new.value)

    def request_drain(self, grace_s: float, *, handover: bool = False) -> None:
        self.drain_order = DrainOrder(grace_s, handover)
        self.drain_requested.set()


CONTEXT = web.AppKey("front_context", FrontContext)

# What the middleware and the chat entry keep about one request, for the response headers.
REQUEST_ID = web.RequestKey("request_id", str)
STARTED = web.RequestKey("started", float)  # event-loop time the request arrived
AFFINITY = web.RequestKey("affinity", str)  # the routing key, echoed to the client
AFFINITY_HEADER = "x-lingma-affinity"
