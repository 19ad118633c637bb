"""Failures through a real front and real workers: retries, 429/503/504, in-band errors, cancel."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import msgspec
import pytest

from front.auth import key_scope
from front.routing import affinity_hash, rendezvous_order
from protocol.channel import MuxClient
from protocol.front_socket import WorkerRef
from protocol.vocabulary import ChildState
from tests.component.worker_support import request_ids_stopped, wait_state
from tests.harness import API_KEY, DirectGateway, front_spec, start_front, start_gateway
from tests.helpers import ChildProcesses, wait_until, wait_until_async

pytestmark = pytest.mark.component

AUTH = {"Authorization": f"Bearer {API_KEY}"}


def chat_body(text: str, *, stream: bool = False) -> dict[str, object]:
    return {"model": "auto", "stream": stream, "messages": [{"role": "user", "content": text}]}


def ranked_workers(gateway: DirectGateway, conversation: str) -> list[int]:
    """Worker indexes in the order the front will try them for this affinity header."""
    key = affinity_hash(key_scope(API_KEY), f"hdr:{conversation}")
    names = [w.spec.name for w in gateway.workers]
    return [names.index(n) for n in rendezvous_order(key, names)]


@pytest.fixture(scope="module")
def gateway() -> Iterator[DirectGateway]:
    root = Path(tempfile.mkdtemp(prefix="lgw-fr-", dir="/tmp"))
    children = ChildProcesses()
    try:
        yield start_gateway(children, root, workers=2, worker_overrides={"cooldown_s": 0.5})
    finally:
        children.kill_all()
        shutil.rmtree(root, ignore_errors=True)


async def workers_ready(gateway: DirectGateway) -> None:
    """Every worker READY by its own word (not cooling down), then in the front's view too."""
    for worker in gateway.workers:
        client = MuxClient(worker.spec.socket_path)
        try:
            await wait_state(client, ChildState.READY)
        finally:
            await client.close()
    gateway.wait_ready()


@pytest.fixture
async def http(gateway: DirectGateway) -> AsyncIterator[aiohttp.ClientSession]:
    gateway.set_script([])
    await workers_ready(gateway)
    async with aiohttp.ClientSession(base_url=gateway.base_url) as session:
        yield session


async def test_upstream_429_moves_the_request_to_the_next_account(
    gateway: DirectGateway, http: aiohttp.ClientSession
) -> None:
    first, second = ranked_workers(gateway, "conv-429")
    gateway.workers[first].set_script(
        [{"match": "busy", "error": {"status": 429, "message": "slow down"}}]
    )
    headers = {**AUTH, "x-lingma-affinity": "conv-429"}
    async with http.post(
        "/v1/chat/completions", json=chat_body("busy?"), headers=headers
    ) as response:
        assert response.status == 200
        body = await response.json()
    assert body["served_by"] == gateway.workers[second].spec.name
    async with http.get("/metrics", headers=AUTH) as response:
        assert (
            'lingma_gw_retries_total{reason="upstream_rate_limited"} 1.0' in await response.text()
        )


async def test_429_on_every_account_is_429_with_retry_after(
    gateway: DirectGateway, http: aiohttp.ClientSession
) -> None:
    gateway.set_script([{"match": "busy", "error": {"status": 429, "message": "slow down"}}])
    async with http.post(
        "/v1/messages", json={**chat_body("busy!"), "max_tokens": 9}, headers=AUTH
    ) as response:
        assert response.status == 429
        assert int(response.headers["Retry-After"]) >= 1
        body = await response.json()
    assert body["type"] == "error" and body["error"]["type"] == "rate_limit_error"


async def test_failure_after_the_first_byte_ends_each_stream_in_band(
    gateway: DirectGateway, http: aiohttp.ClientSession
) -> None:
    gateway.set_script(
        [{"match": "explode", "reply": "partial", "error": {"status": 500, "message": "boom"}}]
    )
    anthropic = {**chat_body("explode", stream=True), "max_tokens": 50}
    async with http.post("/v1/messages", json=anthropic, headers=AUTH) as response:
        assert response.status == 200
        text = (await response.read()).decode()
    assert "text_delta" in text and text.rstrip().split("\n\n")[-1].startswith("event: error")
    assert "message_stop" not in text
    responses = {"model": "auto", "input": "explode", "stream": True}
    async with http.post("/v1/responses", json=responses, headers=AUTH) as response:
        text = (await response.read()).decode()
    assert text.rstrip().split("\n\n")[-1].startswith("event: response.failed")


async def test_client_disconnect_cancels_the_upstream_answer(gateway: DirectGateway) -> None:
    await workers_ready(gateway)
    gateway.set_script([{"match": "slowpoke", "delay_ms": 4000, "reply": "too late"}])
    before = {i: request_ids_stopped(w.emulator_log()) for i, w in enumerate(gateway.workers)}
    started = time.monotonic()
    async with aiohttp.ClientSession(base_url=gateway.base_url) as session:
        request = asyncio.create_task(
            session.post(
                "/v1/chat/completions", json=chat_body("slowpoke", stream=True), headers=AUTH
            )
        )

        async def in_flight() -> bool:
            return int(gateway.health()["in_flight"]) == 1

        await wait_until_async(in_flight, 5, "the request to reach the front")
        request.cancel()  # the client goes away before any byte of the answer
        with pytest.raises(asyncio.CancelledError):
            await request

    def stopped() -> bool:
        return any(
            request_ids_stopped(w.emulator_log()) - before[i] for i, w in enumerate(gateway.workers)
        )

    wait_until(stopped, 3, "the emulator to see the turn stopped (status 499)")
    assert time.monotonic() - started < 4  # stopped by the cancel, not by the scripted delay ending
    wait_until(lambda: int(gateway.health()["in_flight"]) == 0, 5, "the front to release the slot")


async def test_admission_queue_timeout_is_429_and_deadline_is_504(gateway: DirectGateway) -> None:
    await workers_ready(gateway)
    gateway.set_script([{"match": "slowpoke", "delay_ms": 3000, "reply": "late"}])
    children = ChildProcesses()
    root = Path(tempfile.mkdtemp(prefix="lgw-fd-", dir="/tmp"))
    try:
        spec = front_spec(
            root, gateway.workers, max_in_flight=1, queue_timeout_s=0.3, request_timeout_s=1.5
        )
        start_front(children, root, spec)
        async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{spec.port}") as session:

            async def healthy() -> bool:
                try:
                    async with session.get("/healthz") as response:
                        return bool((await response.json())["ok"])
                except aiohttp.ClientError:
                    return False

            await wait_until_async(healthy, 10, "the limited front")
            slow = asyncio.create_task(
                session.post("/v1/chat/completions", json=chat_body("slowpoke"), headers=AUTH)
            )

            async def slot_taken() -> bool:
                async with session.get("/healthz") as response:
                    return int((await response.json())["in_flight"]) == 1

            await wait_until_async(slot_taken, 5, "the slow request to take the only slot")
            async with session.post(
                "/v1/chat/completions", json=chat_body("quick"), headers=AUTH
            ) as rejected:
                assert rejected.status == 429 and rejected.headers["Retry-After"] == "1"
                assert (await rejected.json())["error"]["type"] == "rate_limit_error"
            async with await slow as timed_out:
                assert timed_out.status == 504
                assert (await timed_out.json())["error"]["code"] == "deadline_exceeded"
    finally:
        children.kill_all()
        shutil.rmtree(root, ignore_errors=True)


async def test_no_ready_account_is_503(gateway: DirectGateway) -> None:
    children = ChildProcesses()
    root = Path(tempfile.mkdtemp(prefix="lgw-fn-", dir="/tmp"))
    try:
        ghost = WorkerRef(name="ghost", socket_path=str(root / "missing.sock"))
        spec = msgspec.structs.replace(front_spec(root, []), workers=[ghost])
        start_front(children, root, spec)
        async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{spec.port}") as session:

            async def health() -> dict[str, object] | None:
                try:
                    async with session.get("/healthz") as response:
                        return dict(await response.json())
                except aiohttp.ClientError:
                    return None

            async def up() -> bool:
                return await health() is not None

            await wait_until_async(up, 10, "the front")
            payload = await health()
            assert payload is not None
            assert payload["ok"] is False and payload["status"] == "no_ready_account"
            assert payload["instances"] == [
                {
                    "name": "ghost",
                    "state": "unreachable",
                    "login": "unknown",
                    "backend": "runtime",
                    "ready": False,
                    "in_flight": 0,
                    "worker_in_flight": 0,
                }
            ]
            async with session.post(
                "/v1/chat/completions", json=chat_body("x"), headers=AUTH
            ) as response:
                assert response.status == 503 and response.headers["Retry-After"] == "5"
            async with session.post("/v1/messages", json=chat_body("x"), headers=AUTH) as response:
                assert response.status == 503
                assert (await response.json())["error"]["type"] == "overloaded_error"
            async with session.get("/v1/models", headers=AUTH) as response:
                assert response.status == 503
            async with session.get("/readyz") as response:
                assert response.status == 503 and response.headers["Retry-After"]
                assert (await response.json())["status"] == "no_ready_account"
    finally:
        children.kill_all()
        shutil.rmtree(root, ignore_errors=True)


def test_worker_killed_before_the_first_byte_is_retried() -> None:
    root = Path(tempfile.mkdtemp(prefix="lgw-fk-", dir="/tmp"))
    children = ChildProcesses()
    try:
        gateway = start_gateway(children, root, workers=2)
        asyncio.run(_kill_first_ranked_mid_request(gateway))
    finally:
        children.kill_all()
        shutil.rmtree(root, ignore_errors=True)


async def _kill_first_ranked_mid_request(gateway: DirectGateway) -> None:
    first, second = ranked_workers(gateway, "conv-kill")
    gateway.set_script([{"match": "slowpoke", "delay_ms": 1500, "reply": "survived"}])
    headers = {**AUTH, "x-lingma-affinity": "conv-kill"}
    async with aiohttp.ClientSession(base_url=gateway.base_url) as session:
        request = asyncio.create_task(
            session.post("/v1/chat/completions", json=chat_body("slowpoke"), headers=headers)
        )

        async def routed() -> bool:
            instances = gateway.health()["instances"]
            return int(instances[first]["in_flight"]) == 1

        await wait_until_async(routed, 5, "the request on the first-ranked worker")
        os.killpg(gateway.workers[first].proc.pid, signal.SIGKILL)
        async with await request as response:
            assert response.status == 200
            body = await response.json()
    assert body["served_by"] == gateway.workers[second].spec.name
    assert body["choices"][0]["message"]["content"] == "survived"
