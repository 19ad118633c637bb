"""Process: the shared set-up of the faults-under-load scenarios (test_faults_*.py).

Each file runs one gateway (2 emulated accounts, 2 fronts) for its scenarios, in file order;
each scenario starts by waiting until everything is READY again. Figures (requests sent /
failed / retried, recovery times) go to `figures.json` in the gateway's directory.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp

from protocol.control_socket import ChildStatus
from protocol.vocabulary import ChildState
from tests.helpers import ChildProcesses, free_port, wait_until_async
from tests.process.gateway import SupervisedGateway
from tests.process.load_support import (
    Kind,
    Result,
    describe_failures,
    render_config,
    set_script,
    start_serve,
)

S = ChildState
ACCOUNTS = ["acct-a", "acct-b"]
FRONTS = ["front-0", "front-1"]
WARMUP = 80  # results before the fault: the load is flowing
AFTER = 80  # results after recovery: it flows again


def faults_gateway() -> Iterator[SupervisedGateway]:
    """The gateway a faults file shares; its module fixture yields from this."""
    root = Path(tempfile.mkdtemp(prefix="lgw-fl-", dir="/tmp"))
    children = ChildProcesses()
    try:
        for name in ACCOUNTS:
            set_script(root, name, [])
        port = free_port()
        gw = start_serve(children, root, port, render_config(root, port, ACCOUNTS))
        asyncio.run(gw.login_all(ACCOUNTS, timeout=60))
        yield gw
    finally:
        children.kill_all()
        if not os.environ.get("LGW_KEEP_LOGS"):
            shutil.rmtree(root, ignore_errors=True)


async def all_ready(gw: SupervisedGateway, timeout: float = 40) -> dict[str, ChildStatus]:
    """Every worker and front READY, and every front routing to both workers."""
    await gw.wait_states({name: S.READY for name in [*ACCOUNTS, *FRONTS]}, timeout)

    async def fronts_see_both() -> bool:
        connector = aiohttp.TCPConnector(force_close=True)  # new connections: both fronts
        async with aiohttp.ClientSession(connector=connector) as http:
            for _ in range(6):
                async with http.get(gw.base_url + "/healthz") as response:
                    if (await response.json())["pool_ready"] != len(ACCOUNTS):
                        return False
        return True

    await wait_until_async(fronts_see_both, timeout, "both fronts routing to both workers")
    return await gw.rows()


async def wait_replaced(
    gw: SupervisedGateway, name: str, old_pid: int, timeout: float = 40
) -> float:
    """Seconds until `name` is READY again with a new pid."""
    started = time.monotonic()

    async def replaced() -> bool:
        row = (await gw.rows())[name]
        return row.state == S.READY and row.pid not in (None, old_pid)

    await wait_until_async(replaced, timeout, f"{name} replaced and READY")
    return time.monotonic() - started


def split(results: list[Result]) -> tuple[list[Result], list[Result]]:
    return [r for r in results if not r.stream], [r for r in results if r.stream]


def assert_bounded(results: list[Result]) -> None:
    bad = [r for r in results if r.kind in (Kind.HANG, Kind.BAD_SHAPE, Kind.CONN_ERROR)]
    assert not bad, describe_failures(bad)


def in_flight_at(result: Result, moment: float, slack: float = 1.0) -> bool:
    return result.started_at <= moment + slack and result.ended_at >= moment


def assert_only_streams_in_flight_failed(results: list[Result], fault_at: float) -> None:
    """A worker lost at `fault_at`: every non-streamed request still succeeded (retried before
    its first byte), and only streams already running then ended, with an in-band error."""
    assert_bounded(results)
    plain, streams = split(results)
    assert all(r.kind is Kind.OK for r in plain), describe_failures(plain)
    for r in streams:
        assert r.kind is Kind.OK or (r.kind is Kind.STREAM_ERROR and in_flight_at(r, fault_at)), (
            describe_failures([r])
        )
