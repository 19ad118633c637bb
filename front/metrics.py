"""Runs in the front: its own prometheus-client registry (requests, latency, TTFT, queue, retries).

The supervisor collects these as snapshots (`StatsQuery` → `Stats.metrics`) and serves the
aggregate; a front without a supervisor serves this registry itself on `/metrics`.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from protocol.child_socket import MetricFamily
from protocol.snapshots import snapshot

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class FrontMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "lingma_gw_http_requests",
            "Chat requests by API, serving account, model and outcome status.",
            ["api", "account", "model", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "lingma_gw_request_duration_seconds",
            "Chat request duration, admission to last byte.",
            ["api"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "lingma_gw_time_to_first_token_seconds",
            "Time from request arrival to the first token sent to the client.",
            ["api"],
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "lingma_gw_front_in_flight", "Chat requests this front is serving.", registry=r
        )
        self.queued = Gauge(
            "lingma_gw_front_queue_depth", "Requests waiting for admission.", registry=r
        )
        self.rejections = Counter(
            "lingma_gw_admission_rejections",
            "Requests refused with 429 by admission control.",
            ["reason"],
            registry=r,
        )
        self.retries = Counter(
            "lingma_gw_retries",
            "Chat attempts moved to another worker before the first byte.",
            ["reason"],
            registry=r,
        )
        self.ready_workers = Gauge(
            "lingma_gw_front_ready_workers", "Workers this front can route to.", registry=r
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def families(self) -> list[MetricFamily]:
        return snapshot(self.registry.collect())
