"""Process: the real `lingma-gw serve` - READY, status, crash recovery, FATAL, metrics, drain."""

from __future__ import annotations

import base64
import io
import os
import signal
import tarfile
from pathlib import Path

import aiohttp
import psutil
import pytest

from protocol.vocabulary import ChildState, LoginState
from tests.helpers import ChildProcesses, alive, assert_all_gone, wait_until_async
from tests.process.gateway import (
    EMULATOR,
    SupervisedGateway,
    decode_status,
    start_gateway,
    wait_exit,
)

pytestmark = pytest.mark.process

S = ChildState


async def test_serve_recover_and_drain(children: ChildProcesses, sock_dir: Path) -> None:
    gw = start_gateway(
        children, sock_dir, {"acct-a": EMULATOR, "acct-b": EMULATOR, "broken": "/nonexistent"}
    )
    await gw.login_all(["acct-a", "acct-b"])
    await gw.wait_states({"broken": S.FATAL, "front-0": S.READY})
    await check_status_cli(gw)

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http:
        served: set[str] = set()
        for i in range(40):
            status, body = await gw.chat(http, f"spread {i}")
            assert status == 200, body
            served.add(body["served_by"])
            if served == {"acct-a", "acct-b"}:
                break
        assert served == {"acct-a", "acct-b"}
        await kill_worker_while_serving(gw, http)
        await kill_front(gw, http)
        await check_metrics(gw, http)

    rows = await gw.rows()
    assert (rows["broken"].generation, rows["broken"].restarts) == (1, 0)  # never retried
    tree = gw.tree()
    assert any("emulator" in " ".join(p.cmdline()) for p in tree)
    gw.signal(signal.SIGTERM)
    assert await wait_exit(gw.proc, 30) == 0
    assert_all_gone(tree, timeout=10)
    assert "stopped" in gw.log


async def check_status_cli(gw: SupervisedGateway) -> None:
    code, out, _ = await gw.cli("status", "--json")
    assert code == 1  # running but degraded: "broken" is FATAL
    reply = decode_status(out)
    rows = {row.name: row for row in reply.workers}
    assert set(rows) == {"acct-a", "acct-b", "broken"}
    assert reply.pid == gw.proc.pid and reply.listen == f"127.0.0.1:{gw.port}"
    for name in ("acct-a", "acct-b"):
        row = rows[name]
        assert (row.state, row.login, row.restarts) == (S.READY, LoginState.LOGGED_IN, 0)
        assert row.pid and row.binary_pid and row.models > 0 and row.rss_bytes > 0
        binary = psutil.Process(row.binary_pid)
        assert row.pid in [p.pid for p in binary.parents()]  # the binary is the worker's
        assert os.getpgid(row.pid) == row.pid  # each worker leads its own process group
    broken = rows["broken"]
    assert (broken.state, broken.last_exit, broken.pid) == (S.FATAL, "exit code 78", None)
    assert [f.state for f in reply.fronts] == [S.READY]
    code, out, _ = await gw.cli("status")
    assert code == 1 and "degraded (2/3 accounts ready)" in out and "broken" in out
    code, out, err = await gw.cli("export-session", "acct-a")
    assert code == 0 and "exported" in err
    with tarfile.open(fileobj=io.BytesIO(base64.b64decode(out.strip()))) as bundle:
        assert "cache/user" in bundle.getnames()
    code, out, _ = await gw.cli("login", "acct-b")
    assert code == 0 and out.startswith("acct-b: login logged_in")
    code, _, err = await gw.cli("restart-worker", "nobody")
    assert code == 1 and "no account named 'nobody'" in err


async def kill_worker_while_serving(gw: SupervisedGateway, http: aiohttp.ClientSession) -> None:
    """SIGKILL acct-a's worker: it comes back READY (restarts+1), acct-b serves throughout."""
    old_pid = (await gw.rows())["acct-a"].pid
    assert old_pid is not None
    os.kill(old_pid, signal.SIGKILL)
    statuses: list[int] = []

    async def recovered() -> bool:
        status, body = await gw.chat(http, f"during recovery {len(statuses)}")
        statuses.append(status)
        assert status == 200, body
        row = (await gw.rows())["acct-a"]
        return row.state == S.READY and row.restarts == 1 and row.pid != old_pid

    await wait_until_async(recovered, 30, "acct-a back to READY")
    assert statuses and set(statuses) == {200}


async def kill_front(gw: SupervisedGateway, http: aiohttp.ClientSession) -> None:
    old = (await gw.rows())["front-0"]
    assert old.pid is not None
    os.kill(old.pid, signal.SIGKILL)

    async def replaced() -> bool:
        row = (await gw.rows())["front-0"]
        return row.state == S.READY and row.pid not in (None, old.pid) and row.restarts == 1

    await wait_until_async(replaced, 30, "front-0 restarted")
    status, body = await gw.chat(http, "after the front restart")
    assert status == 200, body
    assert not alive(psutil.Process(old.pid)) if psutil.pid_exists(old.pid) else True


async def check_metrics(gw: SupervisedGateway, http: aiohttp.ClientSession) -> None:
    text = await gw.metrics(http)
    for account in ("acct-a", "acct-b"):
        assert f'lingma_gw_worker_upstream_429_total{{account="{account}"}} 0.0' in text
        assert f'lingma_gw_worker_state{{account="{account}",state="ready"}} 1.0' in text
        assert f'lingma_gw_process_resident_memory_bytes{{process="lingma-{account}"}}' in text
    assert 'lingma_gw_worker_requests_total{account="acct-b",model="auto",status="ok"}' in text
    assert 'lingma_gw_worker_restarts_total{account="acct-a"} 1.0' in text
    assert 'lingma_gw_worker_state{account="broken",state="fatal"} 1.0' in text
    assert 'lingma_gw_front_restarts_total{front="0"} 1.0' in text
    assert 'lingma_gw_process_cpu_seconds_total{process="supervisor"}' in text
