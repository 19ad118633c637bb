"""Runs in the supervisor: the one `/metrics` exposition, aggregated from every child's snapshot.

Workers and fronts answer `StatsQuery` with their prometheus-client families as `MetricFamily`
Structs. A custom collector re-emits them with `account=<name>` (workers) or `front=<i>`
(fronts) added, merged so each family appears once, plus the supervisor's own series: state,
restarts, login and psutil RSS/CPU of every process (supervisor, fronts, workers, binaries).
Fronts fetch the text over the control socket (`MetricsRequest`) to serve `/metrics`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from protocol.child_socket import MetricFamily, Stats, StatsQuery
from protocol.framing import FrameError
from protocol.vocabulary import ChildKind, ChildState, LoginState
from supervisor.handle import ChildHandle, NotConnected
from supervisor.procfacts import FactsSampler

STATS_TIMEOUT_S = 1.0
HandlesView = Callable[[], Sequence[ChildHandle]]


def source_labels(handle: ChildHandle) -> dict[str, str]:
    if handle.kind is ChildKind.WORKER:
        return {"account": handle.name}
    return {"front": handle.name.removeprefix("front-")}


def merge_families(sources: Iterable[tuple[dict[str, str], list[MetricFamily]]]) -> list[Metric]:
    """One family per name across all children; the child's own labels win on a clash."""
    merged: dict[str, Metric] = {}
    for extra, families in sources:
        for family in families:
            metric = merged.get(family.name)
            if metric is None:
                try:
                    metric = merged[family.name] = Metric(family.name, family.help, family.kind)
                except ValueError:
                    continue  # an unknown kind or invalid name: skip rather than break /metrics
            elif metric.type != ("unknown" if family.kind == "untyped" else family.kind):
                continue  # two children disagree on a type: keep the first, drop the other
            for sample in family.samples:
                if sample.name.endswith("_created"):
                    continue  # creation times of per-child series mean nothing once merged
                metric.add_sample(sample.name, {**extra, **sample.labels}, sample.value)
    return list(merged.values())


class GatewayCollector(Collector):
    def __init__(self, handles: HandlesView, sampler: FactsSampler | None = None) -> None:
        self._handles = handles
        self._sampler = sampler or FactsSampler()

    def collect(self) -> Iterator[Metric]:
        handles = list(self._handles())
        yield from merge_families(
            (source_labels(h), h.last_stats.metrics)
            for h in handles
            if h.last_stats is not None and h.process is not None
        )
        yield from self._own_series(handles)

    def _own_series(self, handles: list[ChildHandle]) -> Iterator[Metric]:
        state = GaugeMetricFamily(
            "lingma_gw_worker_state",
            "1 for the current state of each account's worker",
            labels=["account", "state"],
        )
        front_state = GaugeMetricFamily(
            "lingma_gw_front_state",
            "1 for the current state of each front",
            labels=["front", "state"],
        )
        restarts = CounterMetricFamily(
            "lingma_gw_worker_restarts", "Restarts of each account's worker", labels=["account"]
        )
        front_restarts = CounterMetricFamily(
            "lingma_gw_front_restarts", "Restarts of each front", labels=["front"]
        )
        login = GaugeMetricFamily(
            "lingma_gw_worker_login",
            "1 when the account is logged in to Lingma",
            labels=["account"],
        )
        transitions = CounterMetricFamily(
            "lingma_gw_state_transitions",
            "State transitions of each supervised process",
            labels=["process", "from_state", "to_state"],
        )
        for handle in handles:
            labels = source_labels(handle)
            key = labels.get("account") or labels["front"]
            family = state if handle.kind is ChildKind.WORKER else front_state
            for value in ChildState:
                family.add_metric([key, value.value], 1.0 if handle.state == value else 0.0)
            (restarts if handle.kind is ChildKind.WORKER else front_restarts).add_metric(
                [key], handle.restarts
            )
            if handle.kind is ChildKind.WORKER:
                pong = handle.last_pong
                logged_in = pong is not None and pong.login == LoginState.LOGGED_IN
                login.add_metric([key], 1.0 if logged_in else 0.0)
            for (old, new), count in sorted(handle.transitions.items()):
                transitions.add_metric([handle.label, old, new], count)
        yield from (state, front_state, restarts, front_restarts, login, transitions)
        yield from self._process_series(handles)

    def _process_series(self, handles: list[ChildHandle]) -> Iterator[Metric]:
        rss = GaugeMetricFamily(
            "lingma_gw_process_resident_memory_bytes",
            "Resident memory (psutil)",
            labels=["process"],
        )
        cpu = CounterMetricFamily(
            "lingma_gw_process_cpu_seconds", "User+system CPU time (psutil)", labels=["process"]
        )
        for label, pid in process_pids(handles):
            facts = self._sampler.sample(pid)
            if facts.rss_bytes:
                rss.add_metric([label], facts.rss_bytes)
                cpu.add_metric([label], facts.cpu_seconds)
        yield from (rss, cpu)


def process_pids(handles: Iterable[ChildHandle]) -> list[tuple[str, int]]:
    """(process label, pid) for the supervisor, each live child, and each Lingma binary."""
    pids = [("supervisor", os.getpid())]
    for handle in handles:
        if handle.pid is None:
            continue
        pids.append((handle.label, handle.pid))
        pong = handle.last_pong
        if handle.kind is ChildKind.WORKER and pong is not None and pong.binary_pid:
            pids.append((f"lingma-{handle.name}", pong.binary_pid))
    return pids


class MetricsAggregate:
    """Owns the registry and keeps children's snapshots fresh enough."""

    def __init__(self, handles: HandlesView, sampler: FactsSampler | None = None) -> None:
        self._handles = handles
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(GatewayCollector(handles, sampler))
        self._refresh_lock = asyncio.Lock()

    async def refresh(self, max_age_s: float) -> None:
        """Ask every connected child whose snapshot is older than `max_age_s` for a new one."""
        async with self._refresh_lock:
            now = time.monotonic()
            stale = [h for h in self._handles() if now - h.stats_at > max_age_s]
            await asyncio.gather(*(poll_stats(h) for h in stale))

    def render(self) -> str:
        return generate_latest(self.registry).decode()


async def poll_stats(handle: ChildHandle) -> None:
    with contextlib.suppress(NotConnected, FrameError, OSError, TimeoutError):
        reply = await handle.call(lambda i: StatsQuery(id=i), timeout=STATS_TIMEOUT_S)
        if isinstance(reply, Stats):
            handle.record_stats(reply)
