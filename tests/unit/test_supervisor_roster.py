"""The roster: one serving handle per typed key, replaced and removed by key."""

from __future__ import annotations

import pytest

from protocol.vocabulary import ChildKind
from protocol.worker_socket import WorkerReply
from supervisor.handle import ChildHandle, Timings
from supervisor.roster import ChildKey, Roster
from tests.specs import worker_spec

pytestmark = pytest.mark.unit


def child(kind: ChildKind, name: str) -> ChildHandle:
    spec = worker_spec()
    return ChildHandle(
        kind=kind,
        name=name,
        module="nowhere",
        socket_path=f"/nowhere/{name}.sock",
        make_spec=lambda: spec,
        incoming=WorkerReply,
        timings=Timings(ping_interval_s=1.0, ping_timeout_s=5.0),
    )


def test_workers_and_fronts_keep_their_order_and_fronts_come_first() -> None:
    roster = Roster()
    a, front = child(ChildKind.WORKER, "a"), child(ChildKind.FRONT, "front-0")
    roster.add(a)
    roster.add(front)
    roster.add(b := child(ChildKind.WORKER, "b"))
    assert roster.workers() == [a, b] and roster.fronts() == [front]
    assert roster.serving() == [front, a, b]
    assert roster.worker("b") is b and roster.get(ChildKey.front(0)) is front


def test_replace_keeps_the_place_and_returns_the_old_handle() -> None:
    roster = Roster()
    old, other = child(ChildKind.WORKER, "a"), child(ChildKind.WORKER, "b")
    roster.add(old)
    roster.add(other)
    new = child(ChildKind.WORKER, "a")
    assert roster.replace(new) is old
    assert roster.workers() == [new, other]


def test_a_key_serves_once_and_removing_frees_it() -> None:
    roster = Roster()
    roster.add(first := child(ChildKind.FRONT, "front-1"))
    with pytest.raises(KeyError):
        roster.add(child(ChildKind.FRONT, "front-1"))
    assert roster.remove(ChildKey.front(1)) is first
    assert roster.fronts() == [] and roster.get(ChildKey.front(1)) is None
    assert str(ChildKey.front(1)) == "front 1" and str(ChildKey.worker("a")) == "worker a"
