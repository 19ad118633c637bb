"""Runs in the worker: which live request a runtime push belongs to, on one connection.

lingma-proxy runs every ACP chat over one connection and picks its pushes by
`_meta["ai-coding/request-id"]` (lingma-protocol.md §3.6, §5.4); the runtime may also copy a
push to every open connection (§12.2 "broadcast") and sends pushes that belong to no chat at all
(`snapshot/syncAll`, other sessions' updates). So each push reaches at most one subscriber: the
request whose id it carries, else the chat of the session it names, else (a push naming
neither) the legacy ask holding the connection, the only chat it could be for. A push for no
live request is dropped. When the connection ends, every subscriber hears `CLOSED_PUSH`.
"""

from __future__ import annotations

from typing import Any, Protocol

REQUEST_ID_KEY = "ai-coding/request-id"
CLOSED_PUSH = "$/closed"  # handed to every subscriber when the connection ends


class Subscriber(Protocol):
    def put(self, method: str, params: dict[str, Any]) -> None: ...


def push_request_id(params: dict[str, Any]) -> str:
    """ACP's `_meta["ai-coding/request-id"]`, else the legacy `requestId` (or "")."""
    meta = params.get("_meta")
    if isinstance(meta, dict):
        request_id = meta.get(REQUEST_ID_KEY)
        if isinstance(request_id, str) and request_id:
            return request_id
    request_id = params.get("requestId")
    return request_id if isinstance(request_id, str) else ""


def push_session_id(params: dict[str, Any]) -> str:
    session_id = params.get("sessionId")
    return session_id if isinstance(session_id, str) else ""


class Subscription:
    """One chat's claim on its pushes; `close()` when the chat is done with the connection."""

    __slots__ = ("request_id", "router", "session_id", "subscriber", "unaddressed")

    def __init__(
        self,
        router: PushRouter,
        subscriber: Subscriber,
        request_id: str,
        session_id: str,
        unaddressed: bool,
    ) -> None:
        self.router = router
        self.subscriber = subscriber
        self.request_id = request_id
        self.session_id = session_id
        self.unaddressed = unaddressed

    def close(self) -> None:
        self.router.remove(self)


class PushRouter:
    __slots__ = ("_by_request", "_by_session", "_unaddressed", "dropped")

    def __init__(self) -> None:
        self._by_request: dict[str, Subscription] = {}
        self._by_session: dict[str, Subscription] = {}
        self._unaddressed: Subscription | None = None
        self.dropped = 0  # pushes that belonged to no live request

    def __len__(self) -> int:
        return len(self._by_request)

    def subscribe(
        self,
        subscriber: Subscriber,
        *,
        request_id: str,
        session_id: str,
        unaddressed: bool = False,
    ) -> Subscription:
        """Claim `request_id` (and `session_id`); `unaddressed`: also pushes naming neither."""
        subscription = Subscription(self, subscriber, request_id, session_id, unaddressed)
        self._by_request[request_id] = subscription
        if session_id:
            self._by_session[session_id] = subscription
        if unaddressed:
            self._unaddressed = subscription
        return subscription

    def remove(self, subscription: Subscription) -> None:
        if self._by_request.get(subscription.request_id) is subscription:
            del self._by_request[subscription.request_id]
        if self._by_session.get(subscription.session_id) is subscription:
            del self._by_session[subscription.session_id]
        if self._unaddressed is subscription:
            self._unaddressed = None

    def deliver(self, method: str, params: dict[str, Any]) -> None:
        target = self._target(params)
        if target is None:
            self.dropped += 1
            return
        target.subscriber.put(method, params)

    def _target(self, params: dict[str, Any]) -> Subscription | None:
        request_id = push_request_id(params)
        if request_id:
            return self._by_request.get(request_id)
        session_id = push_session_id(params)
        if session_id:
            return self._by_session.get(session_id)
        return self._unaddressed

    def close_all(self) -> None:
        """The connection ended: wake every subscriber once."""
        subscriptions = {id(s): s for s in self._by_request.values()}
        if self._unaddressed is not None:
            subscriptions[id(self._unaddressed)] = self._unaddressed
        for subscription in subscriptions.values():
            subscription.subscriber.put(CLOSED_PUSH, {})
