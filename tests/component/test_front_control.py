"""The front as a supervised process: its Unix socket, drain, signals, SO_REUSEPORT, /metrics."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest

from protocol.channel import MuxClient
from protocol.child_socket import Drain, Ok, Ping, Pong, Stats, StatsQuery
from protocol.control_socket import ControlRequest, MetricsReply, MetricsRequest
from protocol.framing import FramedStream, start_unix_server
from protocol.front_socket import FrontReply, WorkerRef, WorkersUpdate
from protocol.specs import FrontSpec
from protocol.vocabulary import ChildState
from tests.harness import (
    API_KEY,
    DirectGateway,
    front_spec,
    start_front,
    start_gateway,
    wait_front_socket,
)
from tests.helpers import ChildProcesses, free_port, wait_until, wait_until_async

pytestmark = pytest.mark.component

AUTH = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture(scope="module")
def gateway() -> Iterator[DirectGateway]:
    root = Path(tempfile.mkdtemp(prefix="lgw-fc-", dir="/tmp"))
    children = ChildProcesses()
    try:
        yield start_gateway(children, root, workers=1)
    finally:
        children.kill_all()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def extra(gateway: DirectGateway) -> Iterator[tuple[ChildProcesses, Path]]:
    """Room for fronts a test starts and stops itself."""
    gateway.set_script([])
    children = ChildProcesses()
    root = Path(tempfile.mkdtemp(prefix="lgw-fx-", dir="/tmp"))
    try:
        yield children, root
    finally:
        children.kill_all()
        shutil.rmtree(root, ignore_errors=True)


async def wait_serving(spec: FrontSpec, timeout: float = 10.0) -> None:
    async def ok() -> bool:
        try:
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"http://127.0.0.1:{spec.port}/healthz") as response,
            ):
                return bool((await response.json())["ok"])
        except aiohttp.ClientError:
            return False

    await wait_until_async(ok, timeout, f"front on port {spec.port}")


def streamed_content(sse: str) -> str:
    chunks = [json.loads(line[6:]) for line in sse.splitlines() if line.startswith("data: {")]
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


def front_client(spec: FrontSpec) -> MuxClient:
    return MuxClient(spec.socket_path, incoming=FrontReply)


async def test_ping_stats_and_workers_update(gateway: DirectGateway) -> None:
    client = front_client(gateway.spec)
    try:
        pong = await client.call(lambda i: Ping(id=i, sent_at=1.5), 5.0)
        assert isinstance(pong, Pong) and pong.name == "front-0"
        assert pong.state is ChildState.READY and pong.sent_at == 1.5 and pong.pid > 0
        async with aiohttp.ClientSession(base_url=gateway.base_url) as http:
            body = {"model": "auto", "messages": [{"role": "user", "content": "count me"}]}
            async with http.post("/v1/chat/completions", json=body, headers=AUTH) as response:
                assert response.status == 200
        stats = await client.call(lambda i: StatsQuery(id=i), 5.0)
        assert isinstance(stats, Stats) and stats.stats.requests_total >= 1
        families = {f.name: f for f in stats.metrics}
        samples = families["lingma_gw_http_requests"].samples
        assert any(s.labels["account"] == "acct-0" and s.value >= 1 for s in samples)
        reply = await client.call(lambda i: WorkersUpdate(id=i, workers=[]), 5.0)
        assert isinstance(reply, Ok)
        assert gateway.health()["pool_size"] == 0
        worker = gateway.workers[0].spec
        ref = WorkerRef(name=worker.name, socket_path=worker.socket_path)
        await client.call(lambda i: WorkersUpdate(id=i, workers=[ref]), 5.0)
        gateway.wait_ready()
    finally:
        await client.close()


async def test_drain_finishes_in_flight_refuses_new_and_exits_zero(
    gateway: DirectGateway, extra: tuple[ChildProcesses, Path]
) -> None:
    children, root = extra
    gateway.set_script([{"match": "slowpoke", "delay_ms": 800, "reply": "finished anyway"}])
    spec = front_spec(root, gateway.workers)
    proc = start_front(children, root, spec)
    await wait_serving(spec)
    base = f"http://127.0.0.1:{spec.port}"
    client = front_client(spec)
    async with aiohttp.ClientSession(base_url=base) as http:
        body = {
            "model": "auto",
            "stream": True,
            "messages": [{"role": "user", "content": "slowpoke"}],
        }
        slow = asyncio.create_task(http.post("/v1/chat/completions", json=body, headers=AUTH))

        async def in_flight() -> bool:
            async with http.get("/healthz") as health:
                return int((await health.json())["in_flight"]) == 1

        await wait_until_async(in_flight, 5, "the slow request to be in flight")
        assert isinstance(await client.call(lambda i: Drain(id=i, grace_s=10.0), 5.0), Ok)
        async with http.post("/v1/chat/completions", json=body, headers=AUTH) as refused:
            assert (
                refused.status == 503
                and "shutting down" in (await refused.json())["error"]["message"]
            )
        async with http.get("/healthz") as health:
            assert health.status == 503 and (await health.json())["status"] == "draining"
        async with await slow as response:
            assert response.status == 200
            text = (await response.read()).decode()
    await client.close()
    assert text.endswith("data: [DONE]\n\n")
    assert streamed_content(text) == "finished anyway"
    wait_until(lambda: proc.poll() is not None, 10, "the drained front to exit")
    assert proc.returncode == 0
    assert not os.path.exists(spec.socket_path)


async def test_sigterm_drains_and_exits_zero(
    gateway: DirectGateway, extra: tuple[ChildProcesses, Path]
) -> None:
    children, root = extra
    spec = front_spec(root, gateway.workers)
    proc = start_front(children, root, spec)
    await wait_serving(spec)
    proc.send_signal(signal.SIGTERM)
    wait_until(lambda: proc.poll() is not None, 10, "the front to exit on SIGTERM")
    assert proc.returncode == 0


async def test_two_fronts_share_a_port_with_so_reuseport(
    gateway: DirectGateway, extra: tuple[ChildProcesses, Path]
) -> None:
    children, root = extra
    port = free_port()
    specs = []
    for index in (1, 2):
        spec = front_spec(root, gateway.workers, index=index, port=port, reuse_port=True)
        spec = msgspec.structs.replace(spec, socket_path=str(root / f"front{index}.sock"))
        start_front(children, root, spec, name=f"front{index}")
        specs.append(spec)
    for spec in specs:
        await wait_serving(spec)
        wait_front_socket(spec)  # the shared port may have been answered by the other front
        client = front_client(spec)
        try:
            pong = await client.call(lambda i: Ping(id=i), 5.0)
            assert isinstance(pong, Pong) and pong.name == f"front-{spec.index}"
        finally:
            await client.close()


async def test_metrics_come_from_the_supervisor_when_it_answers(
    gateway: DirectGateway, extra: tuple[ChildProcesses, Path]
) -> None:
    children, root = extra
    control_path = str(root / "ctl.sock")

    async def fake_supervisor(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stream: FramedStream[Any, Any] = FramedStream(reader, writer, ControlRequest)
        request = await stream.recv()
        assert isinstance(request, MetricsRequest)
        await stream.send(MetricsReply(text="# aggregated\nlingma_gw_fake_total 7.0\n"))
        await stream.close()

    server = await start_unix_server(control_path, fake_supervisor)
    try:
        spec = msgspec.structs.replace(
            front_spec(root, gateway.workers), control_socket=control_path
        )
        start_front(children, root, spec)
        await wait_serving(spec)
        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{spec.port}/metrics"
            async with http.get(url, headers=AUTH) as response:
                assert response.status == 200
                assert "lingma_gw_fake_total 7.0" in await response.text()
    finally:
        server.close()
