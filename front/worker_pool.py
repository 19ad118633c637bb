"""Runs in the front: the set of workers it may route to, their health, and its load on each.

One `MuxClient` per worker socket carries every request to that worker. A ping loop per
worker keeps its last `Pong` (state, login, in-flight); only a worker whose last ping was
answered and said READY is routable. A worker removed by `WorkersUpdate` is retired: no new
requests, and its connection closes once this front's last request on it has finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Sequence
from typing import Any

from front.routing import Candidate, plan_attempts
from protocol.channel import MuxClient
from protocol.child_socket import Ping, Pong
from protocol.framing import FrameError
from protocol.front_socket import WorkerRef
from protocol.vocabulary import Backend, ChildState, LoginState

log = logging.getLogger(__name__)

LATE_PONGS_BEFORE_UNROUTABLE = 2
# How long a request that finds no READY worker waits for a fresh ping round before its 503.
RECHECK_TIMEOUT_S = 1.0


class LinkState(enum.Enum):
    UNKNOWN = "unknown"  # no ping answered yet
    REACHABLE = "reachable"  # the last ping was answered with a Pong
    UNREACHABLE = "unreachable"  # the connection failed, or pings went unanswered twice in a row
    RETIRED = "retired"  # no longer in the worker set: no new requests, closed once idle


class WorkerLink:
    def __init__(self, ref: WorkerRef) -> None:
        self.name = ref.name
        self.socket_path = ref.socket_path
        self.client = MuxClient(ref.socket_path)
        self.link_state = LinkState.UNKNOWN
        self.pong: Pong | None = None  # the last one
        self.in_flight = 0  # this front's requests on the worker right now
        self.last_seen = 0.0
        self.late_pongs = 0  # pings in a row that timed out
        self.pinged = asyncio.Event()  # the first ping was answered or failed
        self._pinger: asyncio.Task[None] | None = None

    @property
    def reachable(self) -> bool:
        return self.link_state is LinkState.REACHABLE

    @property
    def retired(self) -> bool:
        return self.link_state is LinkState.RETIRED

    @property
    def ready(self) -> bool:
        return self.reachable and self.pong is not None and self.pong.state is ChildState.READY

    @property
    def logging_in(self) -> bool:
        """Not READY because auto-login is renewing its login: worth waiting for."""
        return (
            self.reachable
            and not self.retired
            and self.pong is not None
            and self.pong.login is LoginState.LOGGING_IN
        )

    @property
    def login_attempt(self) -> int:
        return self.pong.login_attempt if self.pong is not None else 0

    @property
    def state(self) -> str:
        """What /healthz and the logs say: the worker's own state once it answers."""
        if not self.reachable or self.pong is None:
            return "unreachable"
        return self.pong.state.value

    @property
    def backend(self) -> Backend:
        """How the worker chats, as its last Pong said (runtime until it answered once)."""
        return self.pong.backend if self.pong is not None else Backend.RUNTIME

    @property
    def login(self) -> str:
        return self.pong.login.value if self.pong is not None else LoginState.UNKNOWN.value

    def mark_unreachable(self) -> None:
        if not self.retired:
            self.link_state = LinkState.UNREACHABLE

    def retire(self) -> None:
        self.link_state = LinkState.RETIRED

    def describe(self) -> dict[str, Any]:
        """What /healthz shows about one worker: no paths, no secrets."""
        remote = self.pong.stats.in_flight if self.pong is not None else 0
        return {
            "name": self.name,
            "state": self.state,
            "login": self.login,
            "backend": self.backend.value,
            "ready": self.ready,
            "in_flight": self.in_flight,
            "worker_in_flight": remote,
        }


class WorkerPool:
    def __init__(self, refs: Sequence[WorkerRef], *, ping_interval_s: float) -> None:
        self.ping_interval_s = ping_interval_s
        self.links: dict[str, WorkerLink] = {}
        self._pending_refs = list(refs)
        self._closed = False
        self._retired: set[WorkerLink] = set()
        # Replacements (same name, new socket) waiting for their first ping: until it is
        # answered the old worker keeps serving, so a reload never leaves a name unroutable.
        self._incoming: dict[str, WorkerLink] = {}
        self._recheck: asyncio.Task[None] | None = None
        self._change: asyncio.Future[None] | None = None  # resolved when a worker's state moves

    async def start(self) -> None:
        self.update(self._pending_refs)

    async def close(self) -> None:
        self._closed = True
        if self._recheck is not None:
            self._recheck.cancel()
        links = [*self.links.values(), *self._retired, *self._incoming.values()]
        self.links.clear()
        self._retired.clear()
        self._incoming.clear()
        await asyncio.gather(*(self._shutdown(link) for link in links))

    def update(self, refs: Sequence[WorkerRef]) -> None:
        """Adopt a new worker set: connect to new ones, retire the ones no longer listed."""
        wanted = {ref.name: ref for ref in refs}
        for links in (self.links, self._incoming):
            for name, link in list(links.items()):
                ref = wanted.get(name)
                if ref is None or (links is self._incoming and ref.socket_path != link.socket_path):
                    del links[name]
                    self._retire(link)
        for name, ref in wanted.items():
            current = self.links.get(name)
            if current is None:
                self.links[name] = self._connect(ref)
            elif current.socket_path != ref.socket_path and name not in self._incoming:
                self._incoming[name] = self._connect(ref)

    def _connect(self, ref: WorkerRef) -> WorkerLink:
        link = WorkerLink(ref)
        link._pinger = asyncio.create_task(self._ping_loop(link), name=f"ping:{ref.name}")
        return link

    def _promote(self, link: WorkerLink) -> None:
        """A replacement answered (or failed) its first ping: it takes over its name."""
        if self._incoming.get(link.name) is not link:
            return
        del self._incoming[link.name]
        old = self.links.get(link.name)
        self.links[link.name] = link
        if old is not None:
            self._retire(old)

    async def first_pings(self, timeout: float) -> None:
        """Until every worker was pinged once: a front that serves before knows no READY one."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                links = [*self.links.values(), *self._incoming.values()]
                await asyncio.gather(*(link.pinged.wait() for link in links))

    def ready_links(self) -> list[WorkerLink]:
        return [link for link in self.links.values() if link.ready]

    def logging_in_links(self) -> list[WorkerLink]:
        return [link for link in self.links.values() if link.logging_in]

    async def changed(self, timeout: float) -> None:
        """Return when some worker's state or login moved (a ping saw it), or after `timeout`."""
        if self._change is None or self._change.done():
            self._change = asyncio.get_running_loop().create_future()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, timeout)):
                await asyncio.shield(self._change)

    def _moved(self) -> None:
        change, self._change = self._change, None
        if change is not None and not change.done():
            change.set_result(None)

    async def recheck(self, timeout: float) -> None:
        """Ping every worker now instead of at the next tick; one recheck at a time.

        Asked for when a request finds no READY worker: a worker that became READY since the
        last ping (login finished, restart done) serves it instead of the request getting a
        503 for up to a whole ping interval. Bounded by `timeout`, so a 503 stays quick.
        """
        if self._recheck is None or self._recheck.done():
            links = list(self.links.values())
            ping_timeout = max(1.0, 2 * self.ping_interval_s)
            self._recheck = asyncio.create_task(
                self._ping_all(links, ping_timeout), name="recheck-workers"
            )
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await asyncio.shield(self._recheck)

    async def _ping_all(self, links: list[WorkerLink], timeout: float) -> None:
        await asyncio.gather(
            *(self._ping_once(link, timeout) for link in links), return_exceptions=True
        )

    def attempts(self, affinity: str, hard_max: int) -> list[WorkerLink]:
        """READY workers to try for this affinity key, in routing order."""
        ready = {link.name: link for link in self.ready_links()}
        candidates = [Candidate(name, link.in_flight) for name, link in ready.items()]
        return [ready[name] for name in plan_attempts(affinity, candidates, hard_max=hard_max)]

    def acquire(self, link: WorkerLink) -> None:
        link.in_flight += 1

    def release(self, link: WorkerLink) -> None:
        link.in_flight -= 1
        if link.retired and link.in_flight <= 0 and link in self._retired:
            self._retired.discard(link)
            asyncio.get_running_loop().create_task(self._shutdown(link))

    def _retire(self, link: WorkerLink) -> None:
        link.retire()
        log.info("worker %s retired from routing", link.name)
        if link.in_flight <= 0:
            asyncio.get_running_loop().create_task(self._shutdown(link))
        else:
            self._retired.add(link)

    async def _shutdown(self, link: WorkerLink) -> None:
        pinger, link._pinger = link._pinger, None
        if pinger is not None:
            pinger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pinger
        await link.client.close()

    async def _ping_loop(self, link: WorkerLink) -> None:
        timeout = max(1.0, 2 * self.ping_interval_s)
        while not self._closed and not link.retired:
            try:
                await self._ping_once(link, timeout)
            except Exception:  # a bug here must not freeze the link in its last state forever
                log.exception("pinging worker %s failed", link.name)
                link.mark_unreachable()
                await link.client.close()
            link.pinged.set()
            self._promote(link)
            await asyncio.sleep(self.ping_interval_s)

    async def _ping_once(self, link: WorkerLink, timeout: float) -> None:
        was, was_login = link.state, link.login
        try:
            await self._ping(link, timeout, was)
        finally:
            if (link.state, link.login) != (was, was_login):
                self._moved()

    async def _ping(self, link: WorkerLink, timeout: float, was: str) -> None:
        try:
            reply = await link.client.call(lambda i: Ping(id=i, sent_at=time.time()), timeout)
        except TimeoutError:
            # One late pong is a busy machine; two in a row, a hung worker: no new requests
            # then (the supervisor kills it soon), but streams in flight on it go on.
            link.late_pongs += 1
            if link.late_pongs >= LATE_PONGS_BEFORE_UNROUTABLE:
                link.mark_unreachable()
            if link.state != was:
                log.warning("worker %s did not answer pings in %.1fs", link.name, timeout)
            return
        except (FrameError, OSError) as exc:
            link.mark_unreachable()
            await link.client.close()  # reconnect from scratch next time
            if was != "unreachable":
                log.warning("worker %s unreachable: %s", link.name, type(exc).__name__)
            return
        link.late_pongs = 0
        if isinstance(reply, Pong) and not link.retired:
            link.pong, link.link_state, link.last_seen = (
                reply,
                LinkState.REACHABLE,
                time.monotonic(),
            )
        else:
            link.mark_unreachable()
        if link.state != was:
            log.info("worker %s is now %s (login %s)", link.name, link.state, link.login)
