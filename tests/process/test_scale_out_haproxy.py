"""Process: two lingma-gw hosts behind a real HAProxy running deploy/haproxy/haproxy.cfg.

Same hosts as the nginx test (tests/process/cluster.py); what is HAProxy's own is proven here:
its /healthz checks take a host without a READY account out of rotation and put it back once
an account is logged in, and its stick table brings a client that copies the gateway's
`x-lingma-affinity` onto its next turn back to the same host.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import aiohttp
import pytest

from tests.helpers import ChildProcesses
from tests.process.balancer import HAPROXY, HAProxy, render_haproxy, start_haproxy
from tests.process.cluster import (
    AFFINITY,
    HOST_A,
    Cluster,
    Conversation,
    bring_up,
    chat,
    conversations_on_each_host,
    launch_hosts,
    send,
    stop_host_under_traffic,
)
from tests.process.gateway import wait_exit

pytestmark = [
    pytest.mark.process,
    pytest.mark.skipif(not os.path.exists(HAPROXY), reason="Debian: apt-get install haproxy"),
]


async def test_two_hosts_behind_haproxy(children: ChildProcesses, sock_dir: Path) -> None:
    cluster = launch_hosts(children, sock_dir)
    haproxy = await start_haproxy(children, sock_dir / "haproxy", cluster.upstreams)
    cluster.front_url = haproxy.base_url
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http:
        await bring_up(cluster, http)
        await check_health_checks(cluster, haproxy, http)
        _, on_b = await conversations_on_each_host(cluster, http, turns=2)
        await check_echoed_key_sticks(cluster, http)
        await stop_host_under_traffic(cluster, http, on_b)
        await haproxy.wait_states({"gw1": "UP", "gw2": "DOWN"})
    cluster.a.signal(signal.SIGTERM)
    assert await wait_exit(cluster.a.proc, 20) == 0


def test_haproxy_example_config_is_valid(sock_dir: Path) -> None:
    config = sock_dir / "haproxy.cfg"
    config.write_text(render_haproxy(["127.0.0.1:1", "127.0.0.1:2"], "127.0.0.1:3"))
    done = subprocess.run(
        [HAPROXY, "-c", "-f", str(config)], capture_output=True, text=True, timeout=20, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


async def check_health_checks(
    cluster: Cluster, haproxy: HAProxy, http: aiohttp.ClientSession
) -> None:
    """B is up but has no READY account: out of rotation; every request goes to A."""
    await haproxy.wait_states({"gw1": "UP", "gw2": "DOWN"})
    for i in range(6):
        conv = Conversation(f"wait-{i}", affinity=f"wait-{i}")
        await send(cluster, http, conv, 1)
        assert conv.served_by in HOST_A
    await cluster.b.login_all(["b1"])
    await haproxy.wait_states({"gw1": "UP", "gw2": "UP"})


async def check_echoed_key_sticks(cluster: Cluster, http: aiohttp.ClientSession) -> None:
    """First turn without a header, next turn with the key the gateway answered: same host."""
    for i in range(5):
        conv = Conversation(f"echo-{i}", affinity=None)
        await send(cluster, http, conv, 1)
        reply = await chat(http, cluster.front_url, conv.ask(2), conv.key)
        assert reply.status == 200, reply.body
        # The stick table picks the host; the front picks the account inside it.
        assert cluster.host_of(reply.body["served_by"]) is cluster.host_of(conv.served_by)
        assert reply.headers[AFFINITY]
