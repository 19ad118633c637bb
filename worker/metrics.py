"""Runs in the worker: its prometheus-client registry and the cheap counters Pong carries.

The supervisor aggregates every worker's registry snapshot (protocol.snapshots) under an
`account` label of its own, so the families here carry only per-request labels.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from protocol.child_socket import ChildStats, MetricFamily
from protocol.snapshots import snapshot

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 40, 80, 160, 320)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30)


class WorkerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "lingma_gw_worker_requests",
            "Chat requests by model and result",
            ["model", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "lingma_gw_worker_request_duration_seconds",
            "Chat duration until Finish/Failure",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "lingma_gw_worker_time_to_first_token_seconds",
            "Time to the first answer token",
            ["model"],
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.session_cache = Counter(
            "lingma_gw_worker_session_cache", "Session cache lookups", ["result"], registry=r
        )
        self.upstream_429 = Counter(
            "lingma_gw_worker_upstream_429", "Upstream rate-limit answers", registry=r
        )
        self.tokens = Counter(
            "lingma_gw_worker_tokens", "Estimated tokens by kind", ["kind"], registry=r
        )
        self.binary_restarts = Counter(
            "lingma_gw_worker_binary_restarts", "Lingma binary restarts", registry=r
        )
        self.in_flight = Gauge("lingma_gw_worker_in_flight", "Chats running upstream", registry=r)
        self.queued = Gauge("lingma_gw_worker_queue_depth", "Chats waiting for a slot", registry=r)
        self.sessions = Gauge("lingma_gw_worker_sessions", "Cached upstream sessions", registry=r)
        self.sessions_deleted = Counter(
            "lingma_gw_worker_sessions_deleted",
            "Throw-away upstream sessions by what deleting them did",
            ["outcome"],
            registry=r,
        )
        self.login_attempts = Counter(
            "lingma_gw_worker_login_attempts",
            "Browser auto-login attempts by outcome",
            ["outcome"],
            registry=r,
        )
        self._stats = _Totals()
        # Labelled children looked up once: `labels()` costs about 2 us a call, and a chat
        # made five of them. Models and statuses are few, so these dicts stay small.
        self._prompt_tokens = self.tokens.labels(kind="prompt")
        self._completion_tokens = self.tokens.labels(kind="completion")
        self._outcomes: dict[tuple[str, str], Counter] = {}
        self._timings: dict[str, tuple[Histogram, Histogram]] = {}

    def login_attempted(self, outcome: str) -> None:
        self.login_attempts.labels(outcome).inc()

    def session_deleted(self, outcome: str) -> None:
        self.sessions_deleted.labels(outcome).inc()

    def chat_done(
        self,
        *,
        model: str,
        status: str,
        total_s: float,
        ttft_s: float | None,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
    ) -> None:
        outcome = self._outcomes.get((model, status))
        if outcome is None:
            outcome = self._outcomes[model, status] = self.requests.labels(model, status)
        outcome.inc()
        timings = self._timings.get(model)
        if timings is None:
            timings = self._timings[model] = (self.latency.labels(model), self.ttft.labels(model))
        timings[0].observe(total_s)
        if ttft_s is not None:
            timings[1].observe(ttft_s)
        self._prompt_tokens.inc(prompt_tokens)
        self._completion_tokens.inc(completion_tokens)
        self._stats.requests += 1
        self._stats.failures += status != "ok"
        self._stats.prompt_tokens += prompt_tokens
        self._stats.completion_tokens += completion_tokens

    def session_lookup(self, hit: bool) -> None:
        self.session_cache.labels(result="hit" if hit else "miss").inc()
        if hit:
            self._stats.hits += 1
        else:
            self._stats.misses += 1

    def rate_limited(self) -> None:
        self.upstream_429.inc()
        self._stats.upstream_429 += 1

    def binary_restarted(self) -> None:
        self.binary_restarts.inc()
        self._stats.restarts += 1

    def stats(self, *, in_flight: int, queued: int, sessions: int) -> ChildStats:
        self.in_flight.set(in_flight)
        self.queued.set(queued)
        self.sessions.set(sessions)
        s = self._stats
        return ChildStats(
            in_flight=in_flight,
            queued=queued,
            requests_total=s.requests,
            failures_total=s.failures,
            upstream_429_total=s.upstream_429,
            session_hits=s.hits,
            session_misses=s.misses,
            sessions=sessions,
            binary_restarts=s.restarts,
            prompt_tokens_total=s.prompt_tokens,
            completion_tokens_total=s.completion_tokens,
        )

    def families(self) -> list[MetricFamily]:
        return snapshot(self.registry.collect())


class _Totals:
    """Plain integers for Pong: reading them back out of prometheus objects costs more."""

    def __init__(self) -> None:
        self.requests = 0
        self.failures = 0
        self.upstream_429 = 0
        self.hits = 0
        self.misses = 0
        self.restarts = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
