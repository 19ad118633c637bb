"""A real worker renews a login it loses while running (issue 16 item 1): the emulator's script
logs the account out mid-answer (or a chat fails as logged out while the runtime still reports
the login), the worker's browser auto-login logs it in again through the emulator's login page,
and the account is READY again, with every attempt counted."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from protocol.channel import MuxClient
from protocol.child_socket import Stats, StatsQuery
from protocol.vocabulary import ChildState, ErrorCode, LoginState
from protocol.worker_socket import LoginInfo, LoginStatusQuery
from tests import specs
from tests.component.worker_support import (
    WorkerProcess,
    chat,
    make_spec,
    pong,
    start_worker,
    wait_state,
)
from tests.helpers import ChildProcesses, wait_until_async

pytestmark = [
    pytest.mark.component,
    pytest.mark.skipif(
        not os.access("/usr/bin/chromium", os.X_OK), reason="Debian chromium is not installed"
    ),
]

LOGIN_S = 40.0  # a browser login, bounded


@pytest.fixture
def worker(children: ChildProcesses, sock_dir: Path) -> Iterator[WorkerProcess]:
    login = specs.login_spec(
        username="demo",
        password="demo",
        auto_login=True,
        timeout_s=30.0,
        max_retry=1,
        retry_pause_s=0.2,
        executable_path="/usr/bin/chromium",
    )
    yield start_worker(children, make_spec(sock_dir, login=login), sock_dir)


@pytest.fixture
async def client(worker: WorkerProcess) -> AsyncIterator[MuxClient]:
    mux = MuxClient(worker.spec.socket_path)
    try:
        await wait_state(mux, ChildState.READY, timeout=LOGIN_S)  # the first start's auto-login
        yield mux
    finally:
        await mux.close()


async def login_attempts(client: MuxClient) -> dict[str, float]:
    stats = await client.call(lambda i: StatsQuery(id=i), 5.0)
    assert isinstance(stats, Stats)
    family = next(f for f in stats.metrics if f.name == "lingma_gw_worker_login_attempts")
    return {s.labels["outcome"]: s.value for s in family.samples if s.name.endswith("_total")}


async def wait_attempts(client: MuxClient, want: dict[str, float]) -> None:
    """The worker sees the login (READY) up to a poll before the browser attempt returns."""

    async def counted() -> bool:
        return await login_attempts(client) == want

    await wait_until_async(counted, 10.0, f"login attempts {want}")


async def renewed(client: MuxClient) -> list[int]:
    """Wait until the worker logs in again; the attempt numbers its Pongs showed meanwhile."""
    seen: list[int] = []

    async def ready_again() -> bool:
        state = await pong(client)
        if state.login is LoginState.LOGGING_IN:
            assert state.state is ChildState.DEGRADED  # the front routes around it
            seen.append(state.login_attempt)
        return state.state is ChildState.READY and bool(seen)

    await wait_until_async(ready_again, LOGIN_S, "the login to be renewed")
    return seen


async def test_a_login_lost_mid_answer_is_renewed_by_auto_login(
    worker: WorkerProcess, client: MuxClient
) -> None:
    await wait_attempts(client, {"succeeded": 1.0})  # the first start's login
    worker.set_script([{"match": "bye", "reply": "so long", "action": "logout"}])
    lost = await chat(client, "bye now")
    assert lost.failure.code is ErrorCode.NOT_LOGGED_IN and lost.text == "so long"
    assert "logged out mid-answer" in worker.emulator_log()
    seen = await renewed(client)
    assert 1 in seen and all(n in (0, 1) for n in seen)  # 0: the pause before attempt 1
    await wait_attempts(client, {"succeeded": 2.0})
    info = await client.call(lambda i: LoginStatusQuery(id=i), 5.0)
    assert isinstance(info, LoginInfo) and (info.user, info.auto_login) == ("demo", "succeeded")
    worker.set_script([])
    assert "You said: back again" in (await chat(client, "back again")).text


async def test_a_login_the_runtime_still_reports_is_renewed_when_chats_find_it_gone(
    worker: WorkerProcess, client: MuxClient
) -> None:
    """§10: chat while logged out is undocumented; a revoked token may leave auth/status at 2."""
    worker.set_script([{"match": "expired", "error": {"kind": "login"}}])
    before = (Path(worker.spec.work_dir) / "cache" / "user").read_bytes()
    assert (await chat(client, "expired")).failure.code is ErrorCode.NOT_LOGGED_IN
    await renewed(client)
    # A new login, not the old one read again: the browser login wrote new tokens.
    assert (Path(worker.spec.work_dir) / "cache" / "user").read_bytes() != before
    await wait_attempts(client, {"succeeded": 2.0})
    assert "still reports it: renewing it" in worker.log_path.read_text()
