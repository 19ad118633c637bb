"""Component: the whole Supervisor in-process, with stand-in children (tests.component.fake_child).

Covers the loop without the real worker/front: READY=1 to a real NOTIFY_SOCKET, status,
metrics aggregation, forwarded account commands, restart-worker, reload (add + replace) and
the TERM drain leaving no child behind.
"""

from __future__ import annotations

import asyncio
import signal
import socket
from pathlib import Path
from typing import Any

import psutil
import pytest

from protocol.control_socket import (
    ErrorReply,
    ExportLoginBundleRequest,
    LoginRequest,
    MetricsReply,
    MetricsRequest,
    OkReply,
    ReloadRequest,
    RestartWorkerRequest,
    StatusReply,
    StatusRequest,
)
from protocol.vocabulary import ChildKind, ChildState, ErrorCode
from supervisor.config import load_config
from supervisor.console import Console
from supervisor.control import request
from supervisor.supervisor import Supervisor
from supervisor.systemd import Notifier
from tests.helpers import alive, free_port, wait_until_async

pytestmark = pytest.mark.component

FAKE = "tests.component.fake_child"


def write_config(path: Path, root: Path, accounts: dict[str, str], key: str = "sk-1") -> None:
    lines = [
        "[auth]",
        f'api_keys = ["{key}"]',
        "[server]",
        f'listen = "127.0.0.1:{free_port()}"',
        f'runtime_dir = "{root / "rt"}"',
        f'state_dir = "{root / "st"}"',
        "grace_period_s = 2",
        "ping_interval_s = 0.2",
        "ping_timeout_s = 3",
        "stats_interval_s = 0.5",
        'progress = "off"',
    ]
    for name, spec in accounts.items():
        binary, _, concurrency = spec.partition("/")
        lines += ["[[accounts]]", f'name = "{name}"', f'binary = "{binary}"']
        lines += [f"max_concurrency = {concurrency}"] if concurrency else []
    path.write_text("\n".join(lines) + "\n")


async def status(path: str) -> StatusReply:
    reply = await request(path, StatusRequest())
    assert isinstance(reply, StatusReply)
    return reply


async def all_ready(path: str, names: set[str]) -> bool:
    reply = await status(path)
    workers = {w.name: w.state for w in reply.workers}
    return set(workers) == names and all(
        row.state == ChildState.READY for row in [*reply.workers, *reply.fronts]
    )


async def test_supervisor_loop_with_stand_in_children(sock_dir: Path) -> None:
    config_path = sock_dir / "gw.toml"
    write_config(config_path, sock_dir, {"a": "fake:ready", "b": "fake:ready"})
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(sock_dir / "notify"))
    notify.setblocking(False)
    config = load_config(config_path, environ={})
    sup = Supervisor(
        config,
        str(config_path),
        {},
        Notifier({"NOTIFY_SOCKET": str(sock_dir / "notify")}),
        Console("off"),
    )
    sup.children.modules = {ChildKind.WORKER: FAKE, ChildKind.FRONT: FAKE}
    control = config.control_socket
    earlier = {p.pid for p in psutil.Process().children()}  # other tests' session fixtures
    received: list[str] = []
    reading = asyncio.create_task(_read_datagrams(notify, received))  # like systemd does
    serving = asyncio.create_task(sup.serve())
    try:
        await wait_until_async(lambda: _exists(control), 10, "control socket")
        await wait_until_async(lambda: all_ready(control, {"a", "b"}), 30, "a, b and front READY")
        await wait_until_async(lambda: _saw(received, "READY=1"), 5, "READY=1 datagram")
        assert received[0].startswith("STATUS=starting")
        assert received[1].startswith("READY=1\nSTATUS=")

        await check_metrics(control)
        await check_forwarded_commands(control)
        await check_restart(control)
        await check_reload(control, config_path, sock_dir)

        children = [
            p
            for p in psutil.Process().children()
            if p.pid not in earlier and "resource_tracker" not in _cmd(p)
        ]
        assert len(children) >= 4  # a, b (new generation), c, front-0
        sup._record_signal(signal.SIGTERM)
        assert await asyncio.wait_for(serving, 30) == 0
        assert not [_cmd(p) for p in children if alive(p)]
        assert not Path(control).exists()
        await wait_until_async(lambda: _saw(received, "STOPPING=1"), 5, "STOPPING=1 datagram")
        assert await _saw(received, "RELOADING=1")
    finally:
        if not serving.done():
            for handle in sup.all_handles():
                handle.force_kill()
            serving.cancel()
        reading.cancel()
        notify.close()


async def _saw(received: list[str], prefix: str) -> bool:
    return any(message.startswith(prefix) for message in received)


async def _read_datagrams(sock: socket.socket, into: list[str]) -> None:
    loop = asyncio.get_running_loop()
    while True:
        into.append((await loop.sock_recv(sock, 4096)).decode())


async def check_metrics(control: str) -> None:
    reply = await request(control, MetricsRequest())
    assert isinstance(reply, MetricsReply)
    text = reply.text
    assert 'fake_requests_total{account="a"}' in text
    assert 'fake_requests_total{account="b"}' in text
    assert 'fake_requests_total{front="0"}' in text
    assert 'lingma_gw_worker_state{account="a",state="ready"} 1.0' in text
    assert 'lingma_gw_worker_state{account="a",state="fatal"} 0.0' in text
    assert 'lingma_gw_worker_login{account="b"} 1.0' in text
    assert 'lingma_gw_process_resident_memory_bytes{process="worker-a"}' in text
    assert 'lingma_gw_process_cpu_seconds_total{process="supervisor"}' in text


async def check_forwarded_commands(control: str) -> None:
    login = await request(control, LoginRequest(name="a"))
    assert isinstance(login, OkReply)
    assert login.data["url"] == "http://login.test/x" and login.data["login"] == "logged_in"
    bundle = await request(control, ExportLoginBundleRequest(name="b"))
    assert isinstance(bundle, OkReply)
    assert bundle.data == {"account": "b", "raw_bytes": 3, "bundle_b64": "QUJD"}
    unknown = await request(control, LoginRequest(name="zz"))
    assert isinstance(unknown, ErrorReply) and unknown.code == ErrorCode.NOT_FOUND
    assert "accounts: a, b" in unknown.message


async def check_restart(control: str) -> None:
    before = {w.name: w for w in (await status(control)).workers}
    reply = await request(control, RestartWorkerRequest(name="a"))
    assert isinstance(reply, OkReply)

    async def restarted() -> bool:
        rows = {w.name: w for w in (await status(control)).workers}
        a = rows["a"]
        return a.restarts == 1 and a.state == ChildState.READY and a.pid != before["a"].pid

    await wait_until_async(restarted, 20, "a restarted")
    after = {w.name: w for w in (await status(control)).workers}
    assert after["b"].pid == before["b"].pid and after["b"].restarts == 0


async def check_reload(control: str, config_path: Path, root: Path) -> None:
    old_b = next(w for w in (await status(control)).workers if w.name == "b")
    write_config(config_path, root, {"a": "fake:ready", "b": "fake:ready/3", "c": "fake:ready"})
    reply: Any = await request(control, ReloadRequest())
    assert isinstance(reply, OkReply), reply
    assert reply.data["added"] == ["c"] and reply.data["changed"] == ["b"]

    async def converged() -> bool:
        rows = {w.name: w for w in (await status(control)).workers}
        return (
            set(rows) == {"a", "b", "c"}
            and all(w.state == ChildState.READY for w in rows.values())
            and rows["b"].pid not in (None, old_b.pid)
        )

    await wait_until_async(converged, 30, "reload converged")
    await wait_until_async(
        lambda: _async(not psutil.pid_exists(old_b.pid or 0)), 10, "old b drained"
    )
    old_front = (await status(control)).fronts[0]
    write_config(
        config_path, root, {"a": "fake:ready", "b": "fake:ready/3", "c": "fake:ready"}, "k2"
    )
    keys = await request(control, ReloadRequest())
    assert isinstance(keys, OkReply) and keys.data["fronts_changed"] and not keys.data["changed"]

    async def front_replaced() -> bool:
        front = (await status(control)).fronts[0]
        return front.state == ChildState.READY and front.pid not in (None, old_front.pid)

    await wait_until_async(front_replaced, 20, "front-0 replaced with the new keys")
    await wait_until_async(
        lambda: _async(not psutil.pid_exists(old_front.pid or 0)), 10, "old front drained"
    )
    config_path.write_text(config_path.read_text() + "bogus = 1\n")
    bad = await request(control, ReloadRequest())
    assert isinstance(bad, ErrorReply) and "unknown key `bogus`" in bad.message


async def _exists(path: str) -> bool:
    return Path(path).exists()


async def _async(value: bool) -> bool:
    return value


def _cmd(proc: psutil.Process) -> str:
    try:
        return " ".join(proc.cmdline())
    except psutil.Error:
        return ""
