"""Process: the real `lingma-gw serve` holds accounts - private sockets and state, hostile IPC
frames on every socket, secrets never in any log, a session bundle carried through the config,
and the systemd unit's exposure score.

The account's binary is a wrapper named `Lingma` (it execs the emulator), so the gateway treats
it as a real deployment: its progress banner must mask the API key.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest

from protocol.child_socket import Ping
from protocol.control_socket import StatusRequest
from protocol.framing import HEADER, MAX_FRAME, encode_frame
from protocol.vocabulary import ChildState
from tests.helpers import PYTHON, REPO, ChildProcesses, assert_all_gone, free_port
from tests.process.gateway import API_KEY, SupervisedGateway, wait_exit
from tests.process.load_support import (
    ADMIN_TOKEN,
    PASSWORD,
    render_config,
    start_serve,
)

pytestmark = pytest.mark.process

S = ChildState
WRONG_KEY = "sk-wrong-SECRET-7d1e"
WRONG_ADMIN = "adm-wrong-SECRET-0c42"
COOKIE = "sess-SECRET-cookie-93ab"
# Debug logs everywhere (the gateway's and the Lingma binary's): a leak at any level shows.
SETTINGS: dict[str, Any] = {
    "fronts": 1,
    "progress": "on",
    "log_level": "debug",
    "lingma_env": {"LINGMA_EMULATOR_LOG_LEVEL": "debug"},
}


@pytest.fixture(scope="module")
def gateway() -> Iterator[SupervisedGateway]:
    root = Path(tempfile.mkdtemp(prefix="lgw-sec-", dir="/tmp"))
    children = ChildProcesses()
    try:
        wrapper = root / "bin" / "Lingma"  # not named like the emulator: a "real" deployment
        SETTINGS["binary"] = str(wrapper)
        wrapper.parent.mkdir()
        emulator = Path(os.path.dirname(PYTHON)) / "lingma-emulator"
        wrapper.write_text(f'#!/bin/sh\nexec "{emulator}" "$@"\n')
        wrapper.chmod(0o755)
        port = free_port()
        config = render_config(root, port, ["acct-a"], **SETTINGS)
        gw = start_serve(children, root, port, config)
        asyncio.run(gw.login_all(["acct-a"], timeout=60))
        yield gw
    finally:
        children.kill_all()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
        yield session


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_sockets_and_state_are_private(gateway: SupervisedGateway) -> None:
    runtime = gateway.root / "rt"
    assert mode(runtime) == 0o700
    sockets = sorted(runtime.glob("*.sock"))
    names = {p.name for p in sockets}
    assert {"control.sock", "front-0.sock", "worker-acct-a.sock"} <= names, names
    for sock in sockets:
        assert stat.S_ISSOCK(sock.stat().st_mode) and mode(sock) == 0o600, (sock, oct(mode(sock)))
    state = gateway.root / "st"
    for directory in (state, state / "accounts", state / "accounts" / "acct-a"):
        assert mode(directory) & 0o077 == 0, (directory, oct(mode(directory)))
    login = state / "accounts" / "acct-a" / "cache" / "user"
    assert login.is_file() and mode(login) & 0o077 == 0, oct(mode(login))


async def frame_exchange(path: str, data: bytes, expect: int) -> tuple[list[Any], bool]:
    """Send raw bytes and read up to `expect` frames: (the frames, whether the peer hung up)."""
    reader, writer = await asyncio.open_unix_connection(path)
    try:
        writer.write(data)
        await writer.drain()
        frames: list[Any] = []
        async with asyncio.timeout(5):
            while len(frames) < expect:
                try:
                    (size,) = HEADER.unpack(await reader.readexactly(HEADER.size))
                    frames.append(msgspec.msgpack.decode(await reader.readexactly(size)))
                except asyncio.IncompleteReadError:
                    return frames, True
        return frames, False
    finally:
        writer.close()


def bad_frame(reply: Any) -> bool:
    return isinstance(reply, dict) and reply.get("code") == "bad_frame"


async def test_hostile_frames_on_every_socket(
    gateway: SupervisedGateway, http: aiohttp.ClientSession
) -> None:
    before = await gateway.rows()
    runtime = gateway.root / "rt"
    garbage = HEADER.pack(6) + b"\xc1\xc1\xc1\xc1\xc1\xc1"  # 0xc1 is never valid msgpack
    oversized = HEADER.pack(MAX_FRAME + 1) + b"x" * 64
    truncated = HEADER.pack(100) + b"\x81\xa4type"
    ping = encode_frame(Ping(id=77, sent_at=1.0))
    for path in [str(p) for p in sorted(runtime.glob("*.sock"))]:
        control = path.endswith("control.sock")
        wrong_type = encode_frame(Ping(id=5, sent_at=1.0) if control else StatusRequest())
        for hostile in (garbage, wrong_type):
            if control:  # one request per connection: a typed error, then the end
                frames, _ = await frame_exchange(path, hostile, expect=1)
                assert frames and bad_frame(frames[0]), (path, frames)
            else:  # a typed error, then the same connection still answers a Ping
                frames, _ = await frame_exchange(path, hostile + ping, expect=2)
                assert len(frames) == 2 and bad_frame(frames[0]), (path, frames)
                assert frames[1]["type"] == "pong", (path, frames)
        # Oversized: refused without being read (a typed error at most), then hung up on.
        frames, closed = await frame_exchange(path, oversized, expect=2)
        assert closed and len(frames) <= 1 and all(map(bad_frame, frames)), (path, frames)
        for hostile in (truncated, os.urandom(4096), b""):
            await frame_exchange(path, hostile, expect=0)

    after = await gateway.rows()
    for name, row in before.items():  # nobody crashed or was restarted
        assert (after[name].pid, after[name].restarts, after[name].state) == (
            row.pid,
            row.restarts,
            S.READY,
        ), name
    status, body = await gateway.chat(http, "still serving after hostile frames")
    assert status == 200, body


async def test_secrets_stay_out_of_every_log(
    gateway: SupervisedGateway, http: aiohttp.ClientSession
) -> None:
    """Last: traffic carrying every kind of secret, a bundle carried by the config, then stop."""
    base = gateway.base_url
    secret_headers = {"Authorization": f"Bearer {API_KEY}", "Cookie": f"session={COOKIE}"}
    body = {"model": "auto", "messages": [{"role": "user", "content": "hello"}]}
    for stream in (False, True):
        async with http.post(
            f"{base}/v1/chat/completions", json={**body, "stream": stream}, headers=secret_headers
        ) as response:
            assert response.status == 200
            await response.read()
    for headers in ({"Authorization": f"Bearer {WRONG_KEY}"}, {"x-api-key": WRONG_KEY}):
        async with http.post(f"{base}/v1/messages", json=body, headers=headers) as response:
            assert response.status == 401
    async with http.get(f"{base}/internal/stats", headers={"x-admin-token": WRONG_ADMIN}) as r:
        assert r.status == 401
    admin = {"x-admin-token": ADMIN_TOKEN}
    async with http.post(f"{base}/internal/session/export", headers=admin) as response:
        assert response.status == 200
        exported = (await response.json())["bundle_b64"]
    code, bundle, _ = await gateway.cli("export-session", "acct-a")
    assert code == 0 and len(bundle.strip()) > 100
    bundle = bundle.strip()

    # The bundle travels through the config to a new account, which starts logged in.
    gateway.config_path.write_text(
        render_config(
            gateway.root,
            gateway.port,
            ["acct-a", "acct-b"],
            bundles={"acct-b": bundle},
            **SETTINGS,
        )
    )
    gateway.signal(signal.SIGHUP)
    await gateway.wait_states({"acct-b": S.READY}, timeout=60)  # no login step: the bundle did

    tree = gateway.tree()
    gateway.signal(signal.SIGTERM)
    assert await wait_exit(gateway.proc, 30) == 0
    assert_all_gone(tree, timeout=10)

    logs = {"gw.log": gateway.log}
    for path in (gateway.root / "st").rglob("*.log"):  # every Lingma binary's own log
        logs[str(path.relative_to(gateway.root))] = path.read_text(errors="replace")
    assert len(logs) >= 3, list(logs)
    assert f'api_key="{API_KEY[:3]}..."' in gateway.log  # the banner showed it, masked
    secrets = {
        "api key": API_KEY,
        "wrong api key": WRONG_KEY,
        "admin token": ADMIN_TOKEN,
        "wrong admin token": WRONG_ADMIN,
        "password": PASSWORD,
        "cookie": COOKIE,
        "bundle": bundle[100:160],
        "exported bundle": exported[100:160],
    }
    for name, text in logs.items():
        for what, secret in secrets.items():
            assert secret not in text, f"{what} found in {name}"
    size = sum(map(len, logs.values()))
    print(f"\n[figures] logs checked for secrets: {len(logs)} files, {size} bytes")


def test_systemd_unit_exposure_is_low() -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    unit = REPO / "systemd" / "lingma-gw.service"
    started = time.monotonic()
    result = subprocess.run(
        [analyze, "security", "--offline=yes", str(unit)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    found = re.search(r"Overall exposure level for \S+: ([\d.]+)", result.stdout + result.stderr)
    assert found, result.stdout[-2000:] + result.stderr[-2000:]
    score = float(found.group(1))
    print(f"\n[figures] systemd exposure score: {score} ({time.monotonic() - started:.1f}s)")
    assert score <= 2.0
