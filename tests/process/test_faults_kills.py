"""Process: processes killed under load - 64 concurrent mixed clients against the real
`lingma-gw serve` while a worker, a Lingma binary or a front is SIGKILLed or SIGSTOPped.

The set-up is tests/process/faults_support.py; upstream faults, reload and SIGTERM are in
test_faults_load.py.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from tests.helpers import wait_until_async
from tests.process.faults_support import (
    AFTER,
    WARMUP,
    S,
    all_ready,
    assert_bounded,
    assert_only_streams_in_flight_failed,
    faults_gateway,
    in_flight_at,
    wait_replaced,
)
from tests.process.gateway import SupervisedGateway
from tests.process.load_support import (
    Figures,
    Kind,
    Load,
    describe_failures,
    retries_total,
    tally,
)

pytestmark = pytest.mark.process


@pytest.fixture(scope="module")
def gateway() -> Iterator[SupervisedGateway]:
    yield from faults_gateway()


@pytest.fixture(scope="module")
def figures(gateway: SupervisedGateway) -> Figures:
    return Figures(gateway.root / "figures.json")


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        yield session


async def test_sigkill_worker_under_load(
    gateway: SupervisedGateway, figures: Figures, http: aiohttp.ClientSession
) -> None:
    rows = await all_ready(gateway)
    victim = rows["acct-a"]
    assert victim.pid is not None
    retries_before = await retries_total(http, gateway.base_url)
    load = Load(gateway.base_url)
    load.start()
    await load.wait_for(WARMUP)
    killed_at = time.monotonic()
    os.kill(victim.pid, signal.SIGKILL)
    recovery = await wait_replaced(gateway, "acct-a", victim.pid)
    await load.wait_for(AFTER)
    results = await load.stop()

    assert_only_streams_in_flight_failed(results, killed_at)
    retried = await retries_total(http, gateway.base_url) - retries_before
    figures.record(
        "sigkill_worker",
        clients=load.clients,
        sent=len(results),
        **tally(results),
        gateway_retries=retried,
        recovery_s=round(recovery, 2),
    )


async def test_sigkill_lingma_binary_under_load(
    gateway: SupervisedGateway, figures: Figures, http: aiohttp.ClientSession
) -> None:
    rows = await all_ready(gateway)
    worker, binary = rows["acct-b"].pid, rows["acct-b"].binary_pid
    assert worker is not None and binary is not None
    load = Load(gateway.base_url)
    load.start()
    await load.wait_for(WARMUP)
    killed_at = time.monotonic()
    os.kill(binary, signal.SIGKILL)

    async def binary_back() -> bool:
        row = (await gateway.rows())["acct-b"]
        return row.state == S.READY and row.binary_pid not in (None, binary)

    await wait_until_async(binary_back, 40, "acct-b's Lingma binary restarted")
    recovery = time.monotonic() - killed_at
    await load.wait_for(AFTER)
    results = await load.stop()

    assert_bounded(results)
    assert (await gateway.rows())["acct-b"].pid == worker  # the worker itself lived on
    for r in results:
        clean_upstream_error = (
            r.kind is Kind.STREAM_ERROR or (r.kind is Kind.HTTP_ERROR and r.status == 502)
        ) and in_flight_at(r, killed_at)
        assert r.kind is Kind.OK or clean_upstream_error, describe_failures([r])
    counts = tally(results)
    figures.record(
        "sigkill_lingma_binary",
        clients=load.clients,
        sent=len(results),
        **counts,
        failed_in_flight=counts["stream_error"] + counts["http_error"],
        recovery_s=round(recovery, 2),
    )


async def test_sigstop_worker_is_replaced(
    gateway: SupervisedGateway, figures: Figures, http: aiohttp.ClientSession
) -> None:
    rows = await all_ready(gateway)
    victim = rows["acct-b"].pid
    assert victim is not None
    retries_before = await retries_total(http, gateway.base_url)
    load = Load(gateway.base_url)
    load.start()
    await load.wait_for(WARMUP)
    stopped_at = time.monotonic()
    os.kill(victim, signal.SIGSTOP)
    try:
        recovery = await wait_replaced(gateway, "acct-b", victim)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGCONT)  # in case it was not replaced: let teardown reap it
    await load.wait_for(AFTER)
    results = await load.stop()

    assert_only_streams_in_flight_failed(results, stopped_at)
    longest = max(r.elapsed for r in results)
    retried = await retries_total(http, gateway.base_url) - retries_before
    figures.record(
        "sigstop_worker",
        clients=load.clients,
        sent=len(results),
        **tally(results),
        gateway_retries=retried,
        replaced_after_s=round(recovery, 2),
        longest_request_s=round(longest, 2),
    )


async def test_sigkill_front_other_front_keeps_serving(
    gateway: SupervisedGateway, figures: Figures, http: aiohttp.ClientSession
) -> None:
    rows = await all_ready(gateway)
    victim = rows["front-0"].pid
    assert victim is not None
    load = Load(gateway.base_url, retry_conn_errors=True)
    load.start()
    await load.wait_for(WARMUP)
    killed_at = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    recovery = await wait_replaced(gateway, "front-0", victim)
    back_at = time.monotonic()
    await load.wait_for(AFTER)
    results = await load.stop()

    assert_bounded(results)  # connection errors were retried by the clients
    for r in results:
        # Only a stream the dead front was writing can be cut; everything else succeeds.
        cut = r.kind is Kind.CUT and in_flight_at(r, killed_at, slack=0.5)
        assert r.kind is Kind.OK or cut, describe_failures([r])
    while_down = [r for r in results if killed_at < r.started_at and r.ended_at < back_at]
    assert [r for r in while_down if r.kind is Kind.OK], "nothing was served while front-0 was down"
    figures.record(
        "sigkill_front",
        clients=load.clients,
        sent=len(results),
        **tally(results),
        client_reconnects=load.client_retries,
        served_while_down=len(while_down),
        recovery_s=round(recovery, 2),
    )
