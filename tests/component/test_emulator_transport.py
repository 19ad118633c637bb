"""lingma-emulator transport: discovery files, LSP framing in WebSocket frames, JSON-RPC quirks."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest

from tests.component.emulator_support import (
    Deframer,
    Emulator,
    RpcClient,
    connect,
    frame,
    short_dir,
    start_emulator,
)
from tests.helpers import ChildProcesses

pytestmark = pytest.mark.component


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    registry = ChildProcesses()
    work_dir = short_dir()
    try:
        yield start_emulator(registry, work_dir / "wd")
    finally:
        registry.kill_all()
        shutil.rmtree(work_dir, ignore_errors=True)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def client(emu: Emulator, http: aiohttp.ClientSession) -> AsyncIterator[RpcClient]:
    rpc = await connect(http, emu.ws_url)
    yield rpc
    await rpc.close()


def test_discovery_files_and_ready_line(emu: Emulator) -> None:
    info = json.loads((emu.work_dir / ".info.json").read_text())
    assert list(info) == ["websocketPort", "pid", "ipcServerPath", "isDev"]
    assert info["isDev"] is False
    assert info["ipcServerPath"] == emu.ipc_path
    assert os.path.basename(emu.ipc_path).startswith(f"lingma-{emu.pid}-")
    legacy = (emu.work_dir / ".info").read_text().splitlines()
    assert legacy == [str(info["websocketPort"]), str(info["pid"]), info["ipcServerPath"]]
    log = (emu.work_dir / "logs" / "lingma.log").read_text()
    assert f"Communication servers ready - WebSocket: {emu.ws_port}, HTTP: {emu.http_port}" in log
    assert "No cached user info, please login." in log
    assert len((emu.work_dir / "cache" / "id").read_text().strip()) == 36


async def test_websocket_paths_and_ids(emu: Emulator, http: aiohttp.ClientSession) -> None:
    for path in ("/", "/ws"):
        rpc = await connect(http, f"ws://127.0.0.1:{emu.ws_port}{path}")
        assert await rpc.call("ping") == {"success": True}
        await rpc.send({"jsonrpc": "2.0", "id": "init-qc", "method": "ping", "params": {}})
        await rpc.close()
    raw = await http.ws_connect(emu.ws_url)
    await raw.send_str(frame({"jsonrpc": "2.0", "id": "init-qc", "method": "ping", "params": {}}))
    reply = Deframer().feed((await raw.receive_str(timeout=5)).encode())
    assert reply == [{"jsonrpc": "2.0", "result": {"success": True}, "id": "init-qc"}]
    await raw.close()


async def test_split_and_several_per_frame_with_utf8(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    endpoint = "https://例子.example/路径-ü"
    update = frame({"jsonrpc": "2.0", "id": 1, "method": "config/updateEndpoint",
                    "params": {"endpoint": endpoint}}).encode()  # fmt: skip
    header_len = update.index(b"\r\n\r\n")
    assert int(update[16:header_len]) == len(update) - header_len - 4  # bytes, not chars
    ws = await http.ws_connect(emu.ws_url)
    cut = update.index("例".encode()) + 1  # split inside a multi-byte character
    for piece in (update[:7], update[7:cut], update[cut:]):
        await ws.send_bytes(piece)
    both = frame({"jsonrpc": "2.0", "id": 2, "method": "config/getEndpoint", "params": {}})
    both += frame({"jsonrpc": "2.0", "id": 3, "method": "ping", "params": {}})
    await ws.send_str(both)
    deframer, replies = Deframer(), list[dict[str, Any]]()
    while len(replies) < 3:
        replies += deframer.feed((await ws.receive_str(timeout=5)).encode())
    await ws.close()
    assert [r["id"] for r in replies] == [1, 2, 3]
    assert replies[0]["result"] == {"success": True}
    assert replies[1]["result"] == {"endpoint": endpoint}


async def test_unframed_json_is_rejected(emu: Emulator, client: RpcClient) -> None:
    await client.ws.send_str(
        json.dumps({"jsonrpc": "2.0", "id": 7, "method": "ping", "params": {}})
    )
    assert await client.call("ping") == {"success": True}  # still serving, 7 never answered
    assert client.events == []
    log = (emu.work_dir / "logs" / "lingma.log").read_text()
    assert "Unknown message header" in log


async def test_params_must_be_objects(client: RpcClient) -> None:
    params: Any
    for params in ([], None, "x"):
        response = await client.request("config/queryModels", params)
        assert response["result"] is None
        assert "cannot unmarshal" in response["error"]["message"]
    as_array = await client.request("config/queryModels", [])
    assert "cannot unmarshal array into Go value of type" in as_array["error"]["message"]


async def test_unknown_method_and_notification(client: RpcClient) -> None:
    await client.send({"jsonrpc": "2.0", "method": "initialized", "params": {}})
    await client.send({"jsonrpc": "2.0", "method": "textDocument/didOpen", "params": {}})
    response = await client.request("codebase/recommendation", {})
    assert response == {
        "jsonrpc": "2.0",
        "result": None,
        "error": {"code": -32601, "message": "method not found: codebase/recommendation"},
        "id": response["id"],
    }
    assert client.events == []


async def test_initialize_both_styles(client: RpcClient) -> None:
    lsp = await client.call(
        "initialize",
        {
            "processId": None,
            "clientInfo": {"name": "test", "version": "1"},
            "rootUri": "file:///tmp/x",
            "capabilities": {},
            "workspaceFolders": [{"uri": "file:///tmp/x", "name": "x"}],
        },
    )
    acp = await client.call(
        "initialize", {"protocolVersion": 1, "clientCapabilities": {}, "timestamp": 1}
    )
    empty = await client.call("initialize", {})
    merged = await client.call(
        "initialize",
        {"rootUri": "file:///tmp/x", "protocolVersion": 1, "clientCapabilities": {}},
    )
    for result in (lsp, acp, empty, merged):
        # Named as the real runtime names itself (§4); the emulator says what it is beside it.
        assert result["serverInfo"] == {
            "name": "lingma",
            "version": "2.11.1-emulator",
            "emulator": "lingma-emulator",
        }
        assert result["capabilities"]["textDocumentSync"]["change"] == 2


async def test_stubs(client: RpcClient) -> None:
    assert await client.call("ping") == {"success": True}
    assert "mcpAutoRun" in await client.call("config/getGlobal")
    assert await client.call("session/getCurrent") == {"currentSessionIds": []}
    assert "commands" in await client.call("extension/query")
    assert "success" in await client.call("user/plan")
    assert (await client.call("dataPolicy/query"))["agreed"] is True
    assert await client.call("textDocument/completion", {}) == {"isIncomplete": True, "items": []}
    assert await client.call("config/queryModels") == {}  # logged out: empty, not an error


async def test_unix_socket_speaks_the_same_protocol(emu: Emulator) -> None:
    reader, writer = await asyncio.open_unix_connection(emu.ipc_path)
    writer.write(frame({"jsonrpc": "2.0", "id": 1, "method": "auth/status", "params": {}}).encode())
    deframer, replies = Deframer(), list[dict[str, Any]]()
    while not replies:
        replies = deframer.feed(await asyncio.wait_for(reader.read(65536), 5))
    writer.close()
    await writer.wait_closed()
    assert replies[0]["id"] == 1 and replies[0]["result"]["status"] == 1


async def test_sigterm_leaves_a_dead_port_behind(children: ChildProcesses) -> None:
    work_dir = short_dir()
    try:
        emu = start_emulator(children, work_dir / "wd")
        os.kill(emu.pid, signal.SIGTERM)
        assert children.procs[-1].wait(timeout=10) == 0
        assert not os.path.exists(emu.ipc_path)
        info = json.loads((work_dir / "wd" / ".info.json").read_text())
        async with aiohttp.ClientSession() as http:
            with pytest.raises(aiohttp.ClientConnectorError):
                await http.ws_connect(f"ws://127.0.0.1:{info['websocketPort']}/")
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)


def test_cli_version_and_status(emu: Emulator) -> None:
    run = [sys.executable, "-m", "emulator"]
    version = subprocess.run([*run, "version"], capture_output=True, text=True, check=True)
    assert version.stdout.startswith("version: 2.11.1-emulator")
    status = subprocess.run(
        [*run, "status", "-o", "json", "--workDir", str(emu.work_dir)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(status.stdout) == {
        "logged_in": False,
        "version": "2.11.1-emulator",
        "username": "",
        "user_type": "",
        "emulator": True,
    }
