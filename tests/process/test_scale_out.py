"""Process: two lingma-gw hosts behind a real nginx running deploy/nginx/lingma-gw.conf.

One balancer, two hosts with different accounts (tests/process/cluster.py): conversations stay
on one host and reuse its upstream session, a host without a READY account is skipped after its
quick 503, streams are not buffered, and stopping a host fails no request.
"""

from __future__ import annotations

import signal
from pathlib import Path

import aiohttp
import pytest

from tests.helpers import ChildProcesses
from tests.process.balancer import start_nginx, tried_hosts
from tests.process.cluster import (
    AFFINITY,
    HOST_A,
    KEY_SHAPE,
    LONG_REPLY,
    STREAM_CUE,
    Cluster,
    Conversation,
    bring_up,
    chat,
    chat_stream,
    check_session_reused,
    conversations_on_each_host,
    health,
    launch_hosts,
    send,
    stop_host_under_traffic,
    wait_health,
)
from tests.process.gateway import wait_exit

pytestmark = pytest.mark.process


async def test_two_hosts_behind_nginx(children: ChildProcesses, sock_dir: Path) -> None:
    cluster = launch_hosts(children, sock_dir)
    nginx = await start_nginx(children, sock_dir / "nginx", cluster.upstreams)
    cluster.front_url = nginx.base_url
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http:
        await bring_up(cluster, http)
        await check_no_ready_account_is_retried(cluster, http)
        await cluster.b.login_all(["b1"])
        await wait_health(cluster.b, http, "ready")
        _, on_b = await conversations_on_each_host(cluster, http, turns=3)
        await check_headerless_conversation_is_stable(cluster, http)
        await check_stream_is_not_buffered(cluster, http)
        replies = await stop_host_under_traffic(cluster, http, on_b)
        tried = [tried_hosts(reply.headers) for reply in replies]
        assert any(len(hosts) > 1 for hosts in tried), tried  # some hashed to B were moved
    cluster.a.signal(signal.SIGTERM)
    assert await wait_exit(cluster.a.proc, 20) == 0


async def check_no_ready_account_is_retried(cluster: Cluster, http: aiohttp.ClientSession) -> None:
    a, b = cluster.a, cluster.b
    code, payload = await health(b, http)
    assert (code, payload["status"], payload["ok"]) == (200, "no_ready_account", False)

    # Asked directly, B refuses at once, before any byte, with a status balancers retry on.
    direct = await chat(http, b.base_url, [{"role": "user", "content": "hi"}], "direct")
    assert direct.status == 503, direct.body
    assert int(direct.headers["retry-after"]) >= 1 and direct.elapsed < 2.0
    assert direct.body["error"]["message"] and KEY_SHAPE.fullmatch(direct.headers[AFFINITY])

    # Through nginx every conversation succeeds on A; one hashed to B is moved after B's 503.
    retried = None
    for i in range(24):
        conv = Conversation(f"wait-{i}", affinity=f"wait-{i}")
        reply = await send(cluster, http, conv, 1)
        assert conv.served_by in HOST_A
        tried = tried_hosts(reply.headers)
        assert tried[-1] == (cluster.address(a), "200"), tried
        if len(tried) > 1:
            retried = tried
            break
    # Stop at the first retry: one failure stays below max_fails, B is not taken out.
    assert retried == [(cluster.address(b), "503"), (cluster.address(a), "200")], retried


async def check_headerless_conversation_is_stable(
    cluster: Cluster, http: aiohttp.ClientSession
) -> None:
    """No client header: nginx keeps the client on one host, the gateway's key stays the same."""
    conv = Conversation("plain", affinity=None)
    for turn in (1, 2):
        await send(cluster, http, conv, turn)
    check_session_reused(cluster, conv, turns=2)


async def check_stream_is_not_buffered(cluster: Cluster, http: aiohttp.ClientSession) -> None:
    conv = Conversation("stream", affinity="stream")
    times = await chat_stream(http, cluster.front_url, conv.ask(1, STREAM_CUE), "stream")
    assert times.status == 200 and times.headers["content-type"].startswith("text/event-stream")
    assert times.text.strip() == LONG_REPLY and times.done_at is not None
    assert KEY_SHAPE.fullmatch(times.headers[AFFINITY])
    # The answer takes ~1.5 s upstream: unbuffered, its chunks arrive spread over that time.
    assert len(times.content_at) >= 5, times.content_at
    assert times.content_at[0] < times.done_at - 1.0, (times.content_at, times.done_at)
