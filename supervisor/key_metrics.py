"""Runs in the supervisor: Prometheus series per key name and for the usage ledger.

Counted from the rows fronts report (so they survive front restarts and reloads), labelled by
key *name* only: names are configured by the operator, so the series stay bounded, and no
secret or digest ever becomes a label. In-flight per key is read live from the limits table.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from protocol.usage import LedgerState, UsageRow
from supervisor.ledger import Ledger

# (key name, requests in flight over every front) for each key with shared limits.
InFlightByKey = Callable[[], list[tuple[str, int]]]


class KeyMetrics(Collector):
    def __init__(self, ledger: Ledger, in_flight: InFlightByKey) -> None:
        self._ledger = ledger
        self._in_flight = in_flight
        self.requests: Counter[tuple[str, str]] = Counter()  # (key, status)
        self.tokens: Counter[tuple[str, str]] = Counter()  # (key, prompt|completion)

    def count(self, rows: list[UsageRow]) -> None:
        for row in rows:
            self.requests[(row.key, str(row.status))] += 1
            self.tokens[(row.key, "prompt")] += row.prompt_tokens
            self.tokens[(row.key, "completion")] += row.completion_tokens

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "lingma_gw_key_requests",
            "Chat requests per API key name and status",
            labels=["key", "status"],
        )
        for (key, status), value in sorted(self.requests.items()):
            requests.add_metric([key, status], value)
        tokens = CounterMetricFamily(
            "lingma_gw_key_tokens",
            "Tokens per API key name (prompt, completion)",
            labels=["key", "kind"],
        )
        for (key, kind), value in sorted(self.tokens.items()):
            tokens.add_metric([key, kind], value)
        yield from (requests, tokens)
        yield from self._live()

    def _live(self) -> Iterator[Metric]:
        in_flight = GaugeMetricFamily(
            "lingma_gw_key_in_flight",
            "Requests in flight per API key name with limits, over every front",
            labels=["key"],
        )
        for name, count in self._in_flight():
            in_flight.add_metric([name], count)
        ledger = self._ledger
        state = GaugeMetricFamily(
            "lingma_gw_usage_ledger_state",
            "1 for the usage ledger's current state",
            labels=["state"],
        )
        for value in LedgerState:
            state.add_metric([value.value], 1.0 if ledger.state is value else 0.0)
        written = CounterMetricFamily(
            "lingma_gw_usage_rows_written", "Usage rows committed to SQLite"
        )
        written.add_metric([], ledger.written)
        dropped = CounterMetricFamily(
            "lingma_gw_usage_rows_dropped", "Usage rows dropped after writes kept failing"
        )
        dropped.add_metric([], ledger.dropped)
        pending = GaugeMetricFamily(
            "lingma_gw_usage_rows_pending", "Usage rows waiting for a commit"
        )
        pending.add_metric([], ledger.pending)
        yield from (in_flight, state, written, dropped, pending)
