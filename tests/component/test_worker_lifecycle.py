"""A real worker's lifecycle: binary crashes, bundles, orphans, drain, exit codes, auto-login."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import msgspec
import psutil
import pytest

from protocol.channel import MuxClient
from protocol.chat import ChatRequest, Failure, Message
from protocol.child_socket import Drain, Ok
from protocol.vocabulary import EXIT_CANNOT_START, BinaryState, ChildState, ErrorCode
from protocol.worker_socket import LoginBundle, LoginBundleQuery, LoginInfo, LoginStatusQuery
from tests.component.worker_support import (
    chat,
    login_via_callback,
    make_spec,
    pong,
    start_worker,
    user,
    wait_state,
)
from tests.helpers import PYTHON, ChildProcesses, assert_all_gone, wait_until, wait_until_async
from tests.specs import login_spec

pytestmark = pytest.mark.component

CHROMIUM = "/usr/bin/chromium"


def exit_code(proc: subprocess.Popen[bytes], timeout: float) -> int:
    wait_until(lambda: proc.poll() is not None, timeout, "the worker to exit")
    return int(proc.returncode)


async def test_binary_crash_mid_answer_and_sigkill_both_restart_it(
    children: ChildProcesses, sock_dir: Path
) -> None:
    worker = start_worker(children, make_spec(sock_dir), sock_dir)
    client = MuxClient(worker.spec.socket_path)
    try:
        first = await login_via_callback(client)
        worker.set_script([{"match": "crash", "reply": "going down", "action": "crash"}])
        crashed = await chat(client, "crash now")
        assert crashed.failure.code is ErrorCode.UPSTREAM_ERROR
        await _wait_new_binary(client, first.binary_pid)
        second = await wait_state(client, ChildState.READY)
        assert second.binary_pid not in (None, first.binary_pid)
        assert second.login == "logged_in"  # the work dir kept the login
        worker.set_script([])
        answer = await chat(client, "still there?")
        assert not _is_alive(first.binary_pid)
        os.kill(second.binary_pid or 0, signal.SIGKILL)
        await _wait_new_binary(client, second.binary_pid)
        third = await wait_state(client, ChildState.READY)
        assert third.stats.binary_restarts == 2
        # The restart dropped the session cache: a follow-up starts a new upstream session.
        history = [user("still there?"), Message(role="assistant", text=answer.text)]
        follow = await chat(client, [*history, user("and now?")])
        assert not follow.finish.session_reused
        assert "You said" in follow.text
    finally:
        await client.close()


def _is_alive(pid: int | None) -> bool:
    try:
        return psutil.Process(pid or 0).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def _wait_new_binary(client: MuxClient, old_pid: int | None) -> None:
    deadline = time.monotonic() + 15
    while (await pong(client)).binary_pid in (None, old_pid):
        assert time.monotonic() < deadline, "the binary was not restarted"
        await asyncio.sleep(0.05)


async def test_bundle_export_then_import_logs_a_fresh_work_dir_in(
    children: ChildProcesses, sock_dir: Path
) -> None:
    first_root = sock_dir / "a"
    first_root.mkdir()
    first = start_worker(children, make_spec(first_root, name="acct-a"), first_root)
    client = MuxClient(first.spec.socket_path)
    try:
        await wait_state(client, ChildState.DEGRADED)
        refused = await client.call(lambda i: LoginBundleQuery(id=i), 10.0)
        assert isinstance(refused, Failure) and refused.code is ErrorCode.NOT_LOGGED_IN
        assert (await chat(client, "too soon")).failure.code is ErrorCode.NOT_LOGGED_IN
        await login_via_callback(client, user="bundle-user")
        bundle = await client.call(lambda i: LoginBundleQuery(id=i), 10.0)
    finally:
        await client.close()
    assert isinstance(bundle, LoginBundle) and bundle.raw_bytes > 0
    second_root = sock_dir / "b"
    second_root.mkdir()
    spec = make_spec(
        second_root,
        name="acct-b",
        login=login_spec(auto_login=False, bundle_b64=bundle.bundle_b64),
    )
    second = start_worker(children, spec, second_root)
    client = MuxClient(second.spec.socket_path)
    try:
        ready = await wait_state(client, ChildState.READY)
        assert ready.login == "logged_in"
        status = await client.call(lambda i: LoginStatusQuery(id=i), 10.0)
        assert isinstance(status, LoginInfo) and status.user == "bundle-user"
        assert (await chat(client, "from the bundle")).finish.served_by == "acct-b"
    finally:
        await client.close()
    log = (second_root / "worker.log").read_text()
    assert "session bundle imported" in log and bundle.bundle_b64[:40] not in log


async def test_no_orphan_binary_after_the_worker_is_sigkilled(
    children: ChildProcesses, sock_dir: Path
) -> None:
    worker = start_worker(children, make_spec(sock_dir), sock_dir)
    client = MuxClient(worker.spec.socket_path)
    try:
        started = await wait_state(client, ChildState.DEGRADED, ChildState.READY)
    finally:
        await client.close()
    assert started.binary_pid is not None and started.pid == worker.proc.pid
    binary = psutil.Process(started.binary_pid)
    assert binary.ppid() == worker.proc.pid
    os.kill(worker.proc.pid, signal.SIGKILL)
    assert_all_gone([binary], timeout=5.0)


async def test_drain_finishes_in_flight_then_exits_cleanly(
    children: ChildProcesses, sock_dir: Path
) -> None:
    worker = start_worker(children, make_spec(sock_dir), sock_dir)
    client = MuxClient(worker.spec.socket_path)
    try:
        ready = await login_via_callback(client)
        worker.set_script([{"match": "hold", "reply": "holding", "action": "hang"}])
        holder = asyncio.create_task(_collect(client, "hold on"))
        await _wait_in_flight(client, 1)
        reply = await client.call(lambda i: Drain(id=i, grace_s=0.5), 5.0)
        assert isinstance(reply, Ok)
        refused = (await chat(client, "too late")).failure
        assert refused.code is ErrorCode.UNAVAILABLE
        events = await asyncio.wait_for(holder, 10.0)
        assert isinstance(events[-1], Failure) and events[-1].code is ErrorCode.CANCELLED
    finally:
        await client.close()
    assert exit_code(worker.proc, 10.0) == 0
    assert not _is_alive(ready.binary_pid)
    assert not Path(worker.spec.socket_path).exists()


async def _collect(client: MuxClient, text: str) -> list[object]:
    request = ChatRequest(
        id=client.next_id(), request_id="drain", model="auto", messages=[user(text)]
    )
    return [event async for event in client.stream(request)]


async def _wait_in_flight(client: MuxClient, count: int) -> None:
    deadline = time.monotonic() + 10
    while (await pong(client)).stats.in_flight != count:
        assert time.monotonic() < deadline, "the chat never went upstream"
        await asyncio.sleep(0.05)


async def test_sigterm_stops_worker_and_binary(children: ChildProcesses, sock_dir: Path) -> None:
    spec = make_spec(sock_dir, dedicated_domain_url="https://lingma.example.internal")
    worker = start_worker(children, spec, sock_dir)
    client = MuxClient(worker.spec.socket_path)
    try:
        started = await wait_state(client, ChildState.DEGRADED, ChildState.READY)
    finally:
        await client.close()
    config = json.loads((Path(spec.work_dir) / "cache" / "cache.json").read_text())
    assert config["endpoint"] == "https://lingma.example.internal"  # config/updateEndpoint
    os.kill(worker.proc.pid, signal.SIGTERM)
    assert exit_code(worker.proc, 10.0) == 0
    assert not _is_alive(started.binary_pid)


def test_unusable_specs_exit_with_cannot_start(children: ChildProcesses, sock_dir: Path) -> None:
    spec = make_spec(sock_dir, binary=str(sock_dir / "no-such-binary"))
    spec_path = sock_dir / "spec.json"
    spec_path.write_bytes(msgspec.json.encode(spec))
    missing = children.start([PYTHON, "-m", "worker", "--spec", str(spec_path)])
    assert exit_code(missing, 15.0) == EXIT_CANNOT_START
    spec_path.write_text("{not json")
    garbage = children.start([PYTHON, "-m", "worker", "--spec", str(spec_path)])
    assert exit_code(garbage, 15.0) == EXIT_CANNOT_START
    # The supervisor's entry point: msgpack bytes into worker.worker.run.
    entry = "import sys; from worker.worker import run; run(sys.stdin.buffer.read())"
    spawned = subprocess.run(
        [PYTHON, "-c", entry],
        input=msgspec.msgpack.encode(spec),
        capture_output=True,
        timeout=15,
        check=False,
    )
    assert spawned.returncode == EXIT_CANNOT_START and b"no-such-binary" in spawned.stderr


@pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK), reason="Debian chromium is not installed")
async def test_playwright_auto_login_against_the_login_page(
    children: ChildProcesses, sock_dir: Path
) -> None:
    login = login_spec(
        username="demo",
        password="demo",
        auto_login=True,
        timeout_s=30.0,
        max_retry=1,
        executable_path=CHROMIUM,
    )
    worker = start_worker(children, make_spec(sock_dir, login=login), sock_dir)
    client = MuxClient(worker.spec.socket_path)
    try:
        ready = await wait_state(client, ChildState.READY, timeout=40.0)
        assert ready.login == "logged_in"

        async def auto_login_done() -> bool:
            info = await client.call(lambda i: LoginStatusQuery(id=i), 10.0)
            assert isinstance(info, LoginInfo) and info.user == "demo"
            return info.auto_login == "succeeded"

        await wait_until_async(auto_login_done, 10.0, "the auto-login task to report success")
    finally:
        await client.close()


@pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK), reason="Debian chromium is not installed")
async def test_rejected_credentials_leave_the_account_degraded_with_a_login_url(
    children: ChildProcesses, sock_dir: Path
) -> None:
    login = login_spec(
        username="demo",
        password="wrong-password",
        auto_login=True,
        timeout_s=30.0,  # only a bound: the form's error message ends the attempt at once
        max_retry=2,  # a rejection is final: no further attempt is made
        executable_path=CHROMIUM,
    )
    worker = start_worker(children, make_spec(sock_dir, login=login), sock_dir)
    client = MuxClient(worker.spec.socket_path)
    try:

        async def auto_login_failed() -> bool:
            info = await client.call(lambda i: LoginStatusQuery(id=i), 10.0)
            assert isinstance(info, LoginInfo)
            return info.auto_login == "failed"

        await wait_until_async(auto_login_failed, 40.0, "the auto-login to give up")
        info = await client.call(lambda i: LoginStatusQuery(id=i), 10.0)
        assert isinstance(info, LoginInfo) and info.login == "logged_out"
        assert info.url.startswith("http") and "1 attempt(s)" in info.message
        # Never FATAL: the worker keeps serving, DEGRADED, and a manual login still works.
        assert (await pong(client)).state is ChildState.DEGRADED
        assert worker.proc.poll() is None
        await login_via_callback(client)
    finally:
        await client.close()
    assert "wrong-password" not in worker.log_path.read_text()


async def test_a_second_worker_on_the_work_dir_waits_for_the_first_binary(
    children: ChildProcesses, sock_dir: Path
) -> None:
    """Never two binaries on one work dir (§7.5): the newcomer waits, then takes over."""
    first_root, second_root = sock_dir / "a", sock_dir / "b"
    first_root.mkdir()
    second_root.mkdir()
    first = start_worker(children, make_spec(first_root), first_root)
    client_a = MuxClient(first.spec.socket_path)
    ready = await login_via_callback(client_a)  # its binary holds the work dir now
    second_spec = make_spec(second_root, work_dir=first.spec.work_dir)
    second = start_worker(children, second_spec, second_root)
    client_b = MuxClient(second.spec.socket_path)
    try:

        async def waiting() -> bool:
            return (await pong(client_b)).binary is BinaryState.WAITING_FOR_WORK_DIR

        await wait_until_async(waiting, 10.0, "the second worker to wait for the work dir")
        assert (await pong(client_b)).binary_pid is None
        os.kill(first.proc.pid, signal.SIGTERM)
        taken_over = await wait_state(client_b, ChildState.READY, timeout=20.0)
        assert taken_over.login == "logged_in" and taken_over.binary_pid != ready.binary_pid
        assert not _is_alive(ready.binary_pid)
    finally:
        await client_a.close()
        await client_b.close()
    log = (Path(first.spec.work_dir) / "logs" / "lingma.log").read_text()
    assert "another runtime instance" not in log
