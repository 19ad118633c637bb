"""Component: ChildHandle with real spawned children (tests.component.fake_child)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import psutil
import pytest

from protocol.backoff import Backoff
from protocol.vocabulary import ChildKind, ChildState
from protocol.worker_socket import WorkerReply
from supervisor.handle import ChildHandle, Timings
from tests.helpers import alive, wait_until_async
from tests.specs import worker_spec

pytestmark = pytest.mark.component

S = ChildState
FAKE = "tests.component.fake_child"


def make_handle(sock_dir: Path, behaviour: str, *, ping_timeout_s: float = 2.0) -> ChildHandle:
    path = str(sock_dir / "worker-a.sock")
    spec = worker_spec(name="a", socket_path=path, binary=behaviour, work_dir=str(sock_dir))
    return ChildHandle(
        kind=ChildKind.WORKER,
        name="a",
        module=FAKE,
        socket_path=path,
        make_spec=lambda: spec,
        incoming=WorkerReply,
        timings=Timings(ping_interval_s=0.1, ping_timeout_s=ping_timeout_s, boot_timeout_s=20),
        backoff=Backoff(base_s=0.05, rng=lambda: 0.5),
    )


async def wait_state(handle: ChildHandle, state: ChildState, timeout: float = 20) -> None:
    assert await handle.wait_for_state(frozenset({state}), timeout), (
        f"{handle.label} stuck in {handle.state}, wanted {state} (last exit: {handle.last_exit})"
    )


async def test_ready_then_crash_restarts_then_stop_drains(sock_dir: Path) -> None:
    handle = make_handle(sock_dir, "fake:ready")
    handle.start()
    try:
        await wait_state(handle, S.READY)
        first_pid = handle.pid
        assert first_pid is not None and handle.generation == 1 and handle.restarts == 0
        assert handle.last_pong is not None and handle.last_pong.models == 3
        assert os.getpgid(first_pid) == first_pid  # the child isolated itself

        os.kill(first_pid, signal.SIGKILL)
        await wait_until_async(
            lambda: _async(handle.state == S.READY and handle.pid not in (None, first_pid)),
            20,
            "restarted child READY",
        )
        assert handle.restarts == 1 and handle.generation == 2
        assert handle.transitions[("ready", "backoff")] == 1
        assert handle.transitions[("backoff", "starting")] == 1
        assert handle.last_exit == "killed by SIGKILL"
    finally:
        pid = handle.pid
        await handle.stop(grace_s=2.0)
    assert handle.state == S.EXITED
    assert handle.last_exit == "exit code 0"  # the Drain made it exit by itself
    assert pid is not None and not _alive(pid)


async def test_reserved_exit_code_is_fatal_without_a_crash_loop(sock_dir: Path) -> None:
    handle = make_handle(sock_dir, "fake:exit78")
    handle.start()
    try:
        await wait_state(handle, S.FATAL)
        assert handle.last_exit == "exit code 78"
        assert handle.generation == 1
        assert not await handle.wait_for_state(frozenset({S.STARTING}), 0.5)
        assert handle.generation == 1  # no retry
    finally:
        await handle.stop(grace_s=1.0)
    assert handle.state == S.EXITED


async def test_crash_loop_keeps_retrying_with_backoff(sock_dir: Path) -> None:
    handle = make_handle(sock_dir, "fake:crash")
    handle.start()
    try:
        await wait_until_async(lambda: _async(handle.generation >= 3), 30, "three generations")
        assert handle.state != S.FATAL
        assert handle.backoff.attempts >= 2
    finally:
        await handle.stop(grace_s=1.0)


async def test_stopped_child_misses_pongs_and_is_killed(sock_dir: Path) -> None:
    handle = make_handle(sock_dir, "fake:ready", ping_timeout_s=0.5)
    handle.start()
    try:
        await wait_state(handle, S.READY)
        pid = handle.pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        await wait_until_async(
            lambda: _async(handle.pid not in (None, pid) and handle.state == S.READY),
            20,
            "replacement of the hung child",
        )
        assert not _alive(pid)
    finally:
        await handle.stop(grace_s=1.0)


async def test_operator_restart_from_ready_and_from_fatal(sock_dir: Path) -> None:
    handle = make_handle(sock_dir, "fake:ready")
    handle.start()
    try:
        await wait_state(handle, S.READY)
        pid = handle.pid
        assert handle.request_restart(grace_s=1.0)
        await wait_until_async(
            lambda: _async(handle.state == S.READY and handle.pid != pid), 20, "restart"
        )
        assert handle.transitions[("ready", "stopping")] == 1
        assert handle.transitions[("stopping", "exited")] == 1
        assert handle.restarts == 1
    finally:
        await handle.stop(grace_s=1.0)

    fatal = make_handle(sock_dir, "fake:exit78")
    fatal.start()
    try:
        await wait_state(fatal, S.FATAL)
        assert fatal.request_restart(grace_s=1.0)
        await wait_until_async(lambda: _async(fatal.generation == 2), 10, "second start")
        await wait_state(fatal, S.FATAL)
        assert fatal.transitions[("fatal", "starting")] == 1
    finally:
        await fatal.stop(grace_s=1.0)


async def test_degraded_pong_drives_the_state(sock_dir: Path) -> None:
    handle = make_handle(sock_dir, "fake:degraded")
    handle.start()
    try:
        await wait_state(handle, S.DEGRADED)
        assert ("starting", "degraded") in handle.transitions
    finally:
        await handle.stop(grace_s=1.0)


async def _async(value: bool) -> bool:
    return value


def _alive(pid: int) -> bool:
    try:
        return alive(psutil.Process(pid))
    except psutil.NoSuchProcess:
        return False
