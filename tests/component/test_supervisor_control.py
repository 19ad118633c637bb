"""Component: the control socket server, its client, and the CLI's messages and exit codes."""

from __future__ import annotations

import asyncio
import socket
import stat
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest

from protocol.control_socket import (
    ChildStatus,
    ErrorReply,
    OkReply,
    RestartWorkerRequest,
    StatusReply,
    StatusRequest,
)
from protocol.framing import HEADER, encode_frame
from protocol.vocabulary import ChildKind, ChildState, ErrorCode, LoginState
from supervisor import control
from supervisor.control import ControlServer, ControlUnavailable, Unreachable, request

pytestmark = pytest.mark.component

ROW = ChildStatus(name="acct-a", kind=ChildKind.WORKER, state=ChildState.READY, pid=42, models=3)


def status_reply(state: ChildState = ChildState.READY) -> StatusReply:
    row = msgspec.structs.replace(ROW, state=state, login=LoginState.LOGGED_IN)
    front = ChildStatus(name="front-0", kind=ChildKind.FRONT, state=ChildState.READY, pid=43)
    return StatusReply(
        version="9.9", pid=1, uptime_s=5, listen="127.0.0.1:1", workers=[row], fronts=[front]
    )


async def handler(message: Any) -> Any:
    match message:
        case StatusRequest():
            return status_reply()
        case RestartWorkerRequest(name="boom"):
            raise RuntimeError("a bug")
        case RestartWorkerRequest(name=name):
            return OkReply(message=f"restarting {name}")
    return ErrorReply(code=ErrorCode.UNSUPPORTED, message="no")


async def cli(*args: str, timeout: float = 20) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "supervisor", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(timeout):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_request_reply_and_socket_mode(sock_dir: Path) -> None:
    path = str(sock_dir / "control.sock")
    server = ControlServer(path, handler)
    await server.start()
    try:
        assert stat.S_IMODE(Path(path).stat().st_mode) == 0o600
        reply = await request(path, StatusRequest())
        assert reply == status_reply()
        ok = await request(path, RestartWorkerRequest(name="acct-a"))
        assert ok == OkReply(message="restarting acct-a")
        crash = await request(path, RestartWorkerRequest(name="boom"))
        assert isinstance(crash, ErrorReply) and crash.code == ErrorCode.INTERNAL
        future = await request(path, StatusRequest(api_version=99))
        assert isinstance(future, ErrorReply) and future.code == ErrorCode.UNSUPPORTED
    finally:
        await server.close()
    assert not Path(path).exists()


async def test_undecodable_request_gets_a_typed_error(sock_dir: Path) -> None:
    path = str(sock_dir / "control.sock")
    server = ControlServer(path, handler)
    await server.start()
    try:
        reader, writer = await asyncio.open_unix_connection(path)
        writer.write(encode_frame({"type": "no-such-request"}))
        header = await reader.readexactly(HEADER.size)
        body = await reader.readexactly(HEADER.unpack(header)[0])
        reply = msgspec.msgpack.decode(body, type=ErrorReply)
        assert reply.code == ErrorCode.BAD_FRAME
        writer.close()
    finally:
        await server.close()


async def test_client_classifies_failures(sock_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = str(sock_dir / "absent.sock")
    with pytest.raises(ControlUnavailable) as info:
        await request(missing, StatusRequest())
    assert info.value.kind == Unreachable.MISSING and "does not exist" in str(info.value)

    stale = str(sock_dir / "stale.sock")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(stale)  # bound, never listening: connect() is refused
        with pytest.raises(ControlUnavailable) as info:
            await request(stale, StatusRequest())
    assert info.value.kind == Unreachable.REFUSED and "connection refused" in str(info.value)

    silent_path = str(sock_dir / "silent.sock")

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client gives up and closes
        writer.close()
        await writer.wait_closed()

    silent = await asyncio.start_unix_server(never_answer, path=silent_path)
    try:
        with pytest.raises(ControlUnavailable) as info:
            await request(silent_path, StatusRequest(), timeout=0.3)
        assert info.value.kind == Unreachable.TIMEOUT and "no reply" in str(info.value)
    finally:
        silent.close()
        await silent.wait_closed()

    async def denied(*args: Any, **kwargs: Any) -> Any:
        raise PermissionError(13, "Permission denied")  # root cannot provoke EACCES for real

    monkeypatch.setattr(control, "open_framed", denied)
    with pytest.raises(ControlUnavailable) as info:
        await request(missing, StatusRequest())
    assert info.value.kind == Unreachable.PERMISSION and "permission denied" in str(info.value)


async def test_cli_exit_codes_and_messages(sock_dir: Path) -> None:
    code, out, err = await cli("status", "--socket", str(sock_dir / "none.sock"))
    assert code == 3 and "does not exist" in err
    code, out, err = await cli("status", "--json", "--socket", str(sock_dir / "none.sock"))
    assert code == 3 and msgspec.json.decode(out) == {"running": False}

    path = str(sock_dir / "control.sock")
    server = ControlServer(path, handler)
    await server.start()
    try:
        code, out, _ = await cli("status", "--socket", path)
        assert code == 0
        assert "acct-a" in out and "ready" in out and "\033[" not in out  # no colour off a TTY
        code, out, _ = await cli("status", "--json", "--socket", path)
        assert code == 0
        assert msgspec.json.decode(out, type=StatusReply) == status_reply()
        code, out, _ = await cli("restart-worker", "acct-b", "--socket", path)
        assert (code, out.strip()) == (0, "restarting acct-b")
        code, _, err = await cli("reload", "--socket", path)
        assert code == 1 and "unsupported: no" in err
    finally:
        await server.close()


async def test_cli_finds_the_socket_via_env_then_config(sock_dir: Path) -> None:
    env = {"LINGMA_GW_RUNTIME_DIR": "/env/dir"}
    assert control.socket_path("/x.sock", "/cfg", env) == "/x.sock"
    assert control.socket_path(None, "/cfg", env) == "/env/dir/control.sock"
    assert control.socket_path(None, "/cfg", {}) == "/cfg/control.sock"
    assert control.socket_path(None, None, {}) == "/run/lingma-gw/control.sock"
    config = sock_dir / "gw.toml"
    config.write_text(f'[server]\nruntime_dir = "{sock_dir}"\n[[accounts]]\nname = "a"\n')
    code, _, err = await cli("status", "--config", str(config))
    assert code == 3 and str(sock_dir / "control.sock") in err
