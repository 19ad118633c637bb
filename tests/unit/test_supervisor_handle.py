"""Unit: the per-process state machine's edges, its bookkeeping, and the backoff policy."""

from __future__ import annotations

import logging

import msgspec
import pytest

from protocol.backoff import Backoff
from protocol.child_socket import Pong
from protocol.vocabulary import ChildKind, ChildState, LoginState
from protocol.worker_socket import WorkerReply
from supervisor.handle import ALLOWED_FROM, ChildHandle, IllegalTransition, Timings
from tests.specs import worker_spec

pytestmark = pytest.mark.unit

S = ChildState


def handle(transitions: list[tuple[ChildHandle, S, S, str]] | None = None) -> ChildHandle:
    spec = worker_spec(name="a", socket_path="/nowhere", binary="x", work_dir="/nowhere")
    return ChildHandle(
        kind=ChildKind.WORKER,
        name="a",
        module="nowhere",
        socket_path="/nowhere",
        make_spec=lambda: spec,
        incoming=WorkerReply,
        timings=Timings(ping_interval_s=1.0, ping_timeout_s=5.0),
        on_transition=(lambda *args: transitions.append(args)) if transitions is not None else None,
    )


def pong(state: S, login: LoginState = LoginState.LOGGED_IN) -> Pong:
    return Pong(id=1, name="a", state=state, login=login, pid=1)


def test_every_state_has_edges_and_fatal_is_reachable_only_from_running_states() -> None:
    assert set(ALLOWED_FROM) == set(ChildState)
    assert ALLOWED_FROM[S.FATAL] == {S.STARTING, S.READY, S.DEGRADED}
    assert S.STOPPING in ALLOWED_FROM[S.EXITED] and len(ALLOWED_FROM[S.EXITED]) == 1
    # Every state can be left again (no trap besides the process ending).
    for state in ChildState:
        assert any(state in sources for sources in ALLOWED_FROM.values()), state


def test_happy_path_logs_and_counts_each_transition(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[tuple[ChildHandle, S, S, str]] = []
    h = handle(seen)
    path = [S.STARTING, S.READY, S.DEGRADED, S.READY, S.BACKOFF, S.STARTING, S.READY]
    with caplog.at_level(logging.INFO, logger="supervisor.handle"):
        for state in path:
            h._set_state(state, "test")
    assert [(old, new) for _, old, new, _ in seen] == list(
        zip([S.EXITED, *path[:-1]], path, strict=True)
    )
    assert len(caplog.records) == len(path)
    assert caplog.records[0].getMessage() == "worker-a exited -> starting (test)"
    assert caplog.records[1].__dict__["to_state"] == "ready"
    assert h.transitions[("ready", "degraded")] == 1
    assert h.transitions[("starting", "ready")] == 2
    assert sum(h.transitions.values()) == len(path)


def test_same_state_is_a_no_op() -> None:
    h = handle()
    h._set_state(S.STARTING)
    h._set_state(S.STARTING)
    assert sum(h.transitions.values()) == 1


@pytest.mark.parametrize(
    ("path", "bad"),
    [
        ([], S.READY),  # never started
        ([S.STARTING], S.EXITED),  # must stop first
        ([S.STARTING, S.READY, S.STOPPING], S.READY),  # no coming back from stopping
        ([S.STARTING, S.FATAL], S.READY),  # FATAL restarts only through STARTING
        ([S.STARTING, S.BACKOFF], S.FATAL),  # FATAL only from a process that exited
    ],
)
def test_illegal_transitions_raise(path: list[S], bad: S) -> None:
    h = handle()
    for state in path:
        h._set_state(state)
    with pytest.raises(IllegalTransition):
        h._set_state(bad)
    assert h.state == (path[-1] if path else S.EXITED)


def state_of(h: ChildHandle) -> ChildState:
    return h.state  # re-read each time: mypy would narrow `h.state` after an assert


def test_pong_state_drives_readiness() -> None:
    h = handle()
    h._set_state(S.STARTING)
    h._apply_pong(pong(S.STARTING, LoginState.LOGGING_IN))
    assert state_of(h) == S.STARTING and h.alive_since is not None
    h._apply_pong(pong(S.DEGRADED, LoginState.LOGGED_OUT))
    assert state_of(h) == S.DEGRADED
    h._apply_pong(pong(S.READY))
    assert state_of(h) == S.READY and h.last_pong is not None
    h._apply_pong(pong(S.STARTING))  # e.g. its binary restarting: not routable
    assert state_of(h) == S.DEGRADED
    h._apply_pong(pong(S.READY))
    h._set_state(S.STOPPING)
    h._apply_pong(pong(S.READY))  # a late Pong does not undo a stop
    assert state_of(h) == S.STOPPING


def test_backoff_doubles_to_the_cap_with_jitter_and_resets() -> None:
    backoff = Backoff(rng=lambda: 0.5)  # the middle of the jitter range: no jitter
    delays = [backoff.next_delay(healthy_for_s=0) for _ in range(9)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert backoff.next_delay(healthy_for_s=59.9) == 30.0
    assert backoff.next_delay(healthy_for_s=60.0) == 0.5  # healthy long enough: reset
    low, high = Backoff(rng=lambda: 0.0), Backoff(rng=lambda: 1.0)
    assert low.next_delay(0) == pytest.approx(0.4)
    assert high.next_delay(0) == pytest.approx(0.6)
    for _ in range(100):
        low.next_delay(0)
    assert low.next_delay(0) == pytest.approx(24.0)  # capped, minus 20 %, no overflow
    backoff.reset()
    assert backoff.next_delay(0) == 0.5


def test_template_excludes_where_things_live() -> None:
    spec = worker_spec(name="a", socket_path="/run/x.sock", binary="b", work_dir="/w")
    template = msgspec.structs.replace(spec, socket_path="")
    assert template.binary == "b" and template.socket_path == ""
