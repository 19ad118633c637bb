"""Process: faults under load - 64 concurrent mixed clients against the real `lingma-gw serve`.

Upstream faults, a dropped runtime connection, SIGHUP and, last, SIGTERM with streams open
(it stops the file's gateway). The set-up is tests/process/faults_support.py; processes killed
under load are in test_faults_kills.py. Figures (requests sent / failed / retried, recovery
times) are printed and written to `figures.json` in the gateway's directory.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest

from tests.helpers import assert_all_gone, wait_until_async
from tests.process.faults_support import (
    ACCOUNTS,
    AFTER,
    FRONTS,
    WARMUP,
    S,
    all_ready,
    assert_bounded,
    faults_gateway,
    in_flight_at,
    split,
)
from tests.process.gateway import API_KEY, SupervisedGateway, wait_exit
from tests.process.load_support import (
    Figures,
    Kind,
    Load,
    Result,
    describe_failures,
    one_request,
    render_config,
    set_script,
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


# Emulator faults from its script. Each client sends one kind of request; the rules hold on
# both accounts (routing may pick either), except the 429 that only acct-a's emulator returns.
# These are faults of one chat and must stay with that chat. A dropped runtime connection is
# another kind: ACP chats share it (lingma-protocol.md §3.6), see the scenario after this one.
FAULT_RULES: list[dict[str, object]] = [
    {"match": "flt-500 ", "error": {"status": 500, "message": "scripted 500"}},
    {"match": "flt-500mid ", "reply": "partial", "error": {"status": 500, "message": "mid"}},
    {"match": "flt-timeout ", "delay_ms": 6000, "reply": "too late"},
    {"match": "flt-garbage ", "reply": "partial and then garbage", "action": "garbage"},
    {"match": "flt-hang ", "reply": "partial", "action": "hang"},
    {"match": "flt-429all ", "error": {"status": 429, "message": "slow down"}},
]
ONLY_A = [{"match": "flt-429one ", "error": {"status": 429, "message": "slow down"}}]
CLIENT_FAULTS = [
    "flt-429one", "flt-500", "flt-500mid", "flt-timeout", "flt-garbage", "flt-hang",
]  # fmt: skip


def expected(fault: str, stream: bool) -> set[tuple[Kind, int]]:
    """How each scripted fault must look to a client: (kind, HTTP status)."""
    ok = {(Kind.OK, 200)}
    upstream_early = {(Kind.HTTP_ERROR, 502)}  # failed before any text: a real status
    upstream_late = {(Kind.STREAM_ERROR, 200)} if stream else upstream_early
    return {
        "flt-429one": ok,  # moved to acct-b, which is healthy
        "flt-500": upstream_early,
        "flt-500mid": upstream_late,
        "flt-timeout": {(Kind.HTTP_ERROR, 504)},
        "flt-garbage": ok,
        "flt-hang": {(Kind.STREAM_ERROR, 200)} if stream else {(Kind.HTTP_ERROR, 504)},
        "": ok,
    }[fault]


def fault_text(client: int, serial: int) -> str:
    """Clients 2k and 2k+1 share a fault (one starts streamed, one not); half stay normal."""
    slot = (client % 32) // 2
    fault = CLIENT_FAULTS[slot] if slot < len(CLIENT_FAULTS) else ""
    return f"{fault} c{client} r{serial}".strip()


async def test_emulator_faults_under_load(
    gateway: SupervisedGateway, figures: Figures, http: aiohttp.ClientSession
) -> None:
    await all_ready(gateway)
    set_script(gateway.root, "acct-a", ONLY_A + FAULT_RULES)
    set_script(gateway.root, "acct-b", FAULT_RULES)
    cooled: set[str] = set()
    load = Load(gateway.base_url, text=fault_text)
    load.start()
    try:
        async with asyncio.timeout(30):
            # acct-a cools down after its 429s (DEGRADED), and comes back by itself.
            while "acct-a" not in cooled or len(load.results) < 4 * WARMUP:
                rows = await gateway.rows()
                cooled |= {n for n in ACCOUNTS if rows[n].state == S.DEGRADED}
                await asyncio.sleep(0.1)
    finally:
        results = await load.stop()
        for name in ACCOUNTS:
            set_script(gateway.root, name, [])
    assert cooled == {"acct-a"}

    assert_bounded(results)
    by_fault: dict[str, dict[str, int]] = {}
    for r in results:
        fault = r.text.split(" ")[0] if r.text.startswith("flt-") else ""
        got = (r.kind, r.status or 0)
        assert got in expected(fault, r.stream), f"{fault}: " + describe_failures([r])
        by_fault.setdefault(fault or "normal", {}).setdefault(r.kind.value, 0)
        by_fault[fault or "normal"][r.kind.value] += 1

    await all_ready(gateway)  # acct-a back from its cool-down without help
    body: dict[str, Any] = {
        "model": "auto",
        "messages": [{"role": "user", "content": "flt-429all x"}],
    }
    set_script(gateway.root, "acct-a", FAULT_RULES)
    set_script(gateway.root, "acct-b", FAULT_RULES)
    try:
        status, retry_after, payload = await post(http, gateway, body)
    finally:
        for name in ACCOUNTS:
            set_script(gateway.root, name, [])
    assert status == 429 and int(retry_after) >= 1, payload
    assert payload["error"]["type"] == "rate_limit_error"
    await wait_cooled_and_back(gateway, ACCOUNTS)
    figures.record("emulator_faults", clients=load.clients, sent=len(results), **by_fault)


async def test_a_dropped_runtime_connection_under_load(
    gateway: SupervisedGateway, figures: Figures, http: aiohttp.ClientSession
) -> None:
    """The runtime drops a connection that ACP chats share (§3.6): every chat on it loses it.

    The chat that hit the drop, and every other one whose client had not been sent anything
    yet (all non-streamed ones), is asked again on a fresh connection; streams that had already
    sent text end with an in-band error. Then the load flows as before.
    """
    await all_ready(gateway)
    rule = [{"match": "flt-drop ", "action": "drop", "times": 1}]
    load = Load(gateway.base_url)
    load.start()
    try:
        await load.wait_for(WARMUP)
        for name in ACCOUNTS:
            set_script(gateway.root, name, rule)
        dropped_at = time.monotonic()
        dropper = await one_request(
            http, gateway.base_url, client=99, api="openai", stream=False, text="flt-drop x"
        )
        await load.wait_for(AFTER)
    finally:
        results = await load.stop()
        for name in ACCOUNTS:
            set_script(gateway.root, name, [])
    assert dropper.kind is Kind.OK, describe_failures([dropper])  # asked again, answered
    assert_bounded(results)
    plain, streams = split(results)
    assert all(r.kind is Kind.OK for r in plain), describe_failures(plain)
    lost = [r for r in streams if r.kind is not Kind.OK]
    for r in lost:
        shared_loss = r.kind is Kind.STREAM_ERROR and "connection lost" in r.detail
        assert shared_loss and in_flight_at(r, dropped_at), describe_failures([r])
    figures.record("dropped_shared_connection", sent=len(results), streams_lost=len(lost))


async def wait_cooled_and_back(gw: SupervisedGateway, names: list[str]) -> None:
    """Every account in `names` cools down (DEGRADED), then comes back READY by itself."""
    seen: set[str] = set()

    async def back() -> bool:
        rows = await gw.rows()
        seen.update(n for n in names if rows[n].state == S.DEGRADED)
        return seen == set(names) and all(rows[n].state == S.READY for n in names)

    await wait_until_async(back, 30, f"{names} to cool down and come back")


async def post(
    http: aiohttp.ClientSession, gw: SupervisedGateway, body: dict[str, Any]
) -> tuple[int, str, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with http.post(
        gw.base_url + "/v1/chat/completions", json=body, headers=headers
    ) as response:
        return response.status, response.headers.get("Retry-After", ""), await response.json()


async def test_sighup_reload_under_load_fails_nothing(
    gateway: SupervisedGateway, figures: Figures, http: aiohttp.ClientSession
) -> None:
    """A reload that replaces acct-a's worker and both fronts, under load: 0 failed requests."""
    before = await all_ready(gateway)
    load = Load(gateway.base_url)
    load.start()
    await load.wait_for(WARMUP)
    changed = render_config(
        gateway.root, gateway.port, ACCOUNTS, max_in_flight=200, max_concurrency={"acct-a": 40}
    )
    gateway.config_path.write_text(changed)
    reloaded_at = time.monotonic()
    gateway.signal(signal.SIGHUP)

    async def replaced() -> bool:
        rows = await gateway.rows()
        return all(
            rows[name].state == S.READY and rows[name].pid != before[name].pid
            for name in ["acct-a", *FRONTS]
        )

    await wait_until_async(replaced, 60, "acct-a and both fronts replaced")
    converged = time.monotonic() - reloaded_at
    await all_ready(gateway)
    await load.wait_for(AFTER)
    results = await load.stop()

    assert all(r.kind is Kind.OK for r in results), describe_failures(results)
    rows = await gateway.rows()
    assert rows["acct-b"].pid == before["acct-b"].pid  # unchanged: not touched
    figures.record(
        "sighup_reload",
        clients=load.clients,
        sent=len(results),
        **tally(results),
        converged_s=round(converged, 2),
    )


async def test_sigterm_finishes_open_streams_then_exits_clean(
    gateway: SupervisedGateway, figures: Figures, http: aiohttp.ClientSession
) -> None:
    """Last: streams open at SIGTERM finish within the grace period, new requests get 503."""
    await all_ready(gateway)
    for name in ACCOUNTS:
        set_script(gateway.root, name, [{"match": "slow-drain ", "delay_ms": 1500}])
    streams = [
        asyncio.create_task(
            one_request(
                http,
                gateway.base_url,
                client=i,
                api="anthropic" if i % 2 else "openai",
                stream=True,
                text=f"slow-drain {i}",
            )
        )
        for i in range(16)
    ]

    async def in_flight() -> bool:
        rows = await gateway.rows()
        return sum(rows[n].in_flight for n in ACCOUNTS) >= len(streams)

    await wait_until_async(in_flight, 10, "every slow stream in flight on a worker")
    tree = gateway.tree()
    term_at = time.monotonic()
    gateway.signal(signal.SIGTERM)
    late: list[Result] = []  # sent after SIGTERM, while the slow streams are still open
    while not all(task.done() for task in streams):
        late.append(
            await one_request(
                http, gateway.base_url, client=99, api="openai", stream=False, text="too late"
            )
        )
        await asyncio.sleep(0.05)
    finished = [task.result() for task in streams]
    drained = time.monotonic() - term_at
    code = await wait_exit(gateway.proc, 30)
    exited = time.monotonic() - term_at

    assert all(r.kind is Kind.OK for r in finished), describe_failures(finished)
    assert drained < 6, f"streams took {drained:.1f}s, grace is 6s"
    assert code == 0
    assert_all_gone(tree, timeout=10)
    # Until the fronts hear of the drain (a few ms) requests are still served in full; from
    # the first refusal on, every new request is refused: 503 + Retry-After, or no listener.
    first = next(i for i, r in enumerate(late) if r.kind is not Kind.OK)
    refused, unavailable = late[first:], [r for r in late if r.status == 503]
    assert unavailable and all(
        r.kind is Kind.HTTP_ERROR and r.headers.get("Retry-After") for r in unavailable
    ), describe_failures(late)
    assert all(r.status == 503 or r.kind is Kind.CONN_ERROR for r in refused)
    figures.record(
        "sigterm_drain",
        open_streams=len(finished),
        finished_ok=sum(r.kind is Kind.OK for r in finished),
        served_before_the_drain_began=first,
        refused_503=len(unavailable),
        drained_s=round(drained, 2),
        exit_s=round(exited, 2),
        exit_code=code,
        orphans=0,
    )
