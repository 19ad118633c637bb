"""Runs in the emulator: process start-up — listeners, discovery files, logs, shutdown.

Order matters to clients: the WebSocket and HTTP listeners (and the IPC socket) are bound and
serving before `.info.json` is written atomically and `Communication servers ready` is logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import secrets
import signal
import socket
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import psutil
from aiohttp import WSMsgType, web

from emulator.cloud_auth import Login
from emulator.cloud_server import CloudApi, add_cloud_routes
from emulator.cloud_settings import CloudKnobs, EndpointAdvert
from emulator.connection import ClientConnection
from emulator.dispatch import make_handler
from emulator.login_page import build_http_app
from emulator.runtime import Runtime
from emulator.settings import EMULATOR_NAME, Knobs
from emulator.store import SharedClientInfo, WorkDir

log = logging.getLogger("lingma-emulator")

MAX_WS_MESSAGE = 64 * 1024 * 1024
READ_CHUNK = 65536
LISTEN_FAILED_EXIT_CODE = 1
CLOSE_TIMEOUT_S = 2.0  # how long a server-side close waits for the client's close frame
MACHINE_TOKEN_HEADER = "Cosy-MachineToken"  # noqa: S105 - a header name, not a secret


@dataclass(frozen=True)
class StartOptions:
    work_dir: Path
    socket_port: int
    http_port: int
    copy_data_dir: Path | None = None


def configure_logging(log_path: Path, level: str) -> None:
    """Plain lines, like the runtime's own log, to logs/lingma.log and stderr."""
    formatter = logging.Formatter(f"%(asctime)s %(levelname)s [{EMULATOR_NAME}] %(message)s")
    root = logging.getLogger()
    root.handlers.clear()
    for handler in (
        logging.FileHandler(log_path, encoding="utf-8"),
        logging.StreamHandler(sys.stderr),
    ):
        handler.setFormatter(formatter)
        root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def bind_tcp(port: int) -> socket.socket:
    """127.0.0.1 only; port 0 picks a free one."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def ipc_path() -> Path:
    """A fresh socket per start (the real runtime's pipe name changes every start too).

    It lives outside the work dir, so a live work dir can be copied; sockets left by dead
    emulators are swept on the way.
    """
    directory = Path(tempfile.gettempdir()) / f"lingma-emulator-{os.getuid()}"
    directory.mkdir(mode=0o700, exist_ok=True)
    for stale in directory.glob("lingma-*.sock"):
        pid = stale.name.split("-")[1]
        if pid.isdigit() and not psutil.pid_exists(int(pid)):
            _remove_socket(stale)
    return directory / f"lingma-{os.getpid()}-{secrets.token_hex(3)}.sock"


def build_ws_app(rt: Runtime) -> web.Application:
    handler = make_handler(rt)

    async def endpoint(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(
            max_msg_size=MAX_WS_MESSAGE, compress=False, timeout=CLOSE_TIMEOUT_S, decode_text=False
        )
        if not ws.can_prepare(request).ok:
            return web.Response(text="lingma-emulator: WebSocket JSON-RPC endpoint (EMULATOR)\n")
        if rt.knobs.require_machine_token and not machine_token_ok(request, rt.workdir):
            log.warning(
                "EMULATOR refused a WebSocket upgrade: %s missing or wrong", MACHINE_TOKEN_HEADER
            )
            return web.Response(
                status=401, text=f"lingma-emulator: {MACHINE_TOKEN_HEADER} missing or wrong\n"
            )
        await ws.prepare(request)

        async def closer() -> None:
            await ws.close()

        conn = ClientConnection(sink=ws.send_str, closer=closer, handler=handler, knobs=rt.knobs)
        if rt.knobs.single_client:
            await evict_others(rt)
        rt.connections.add(conn)
        conn.start()
        try:
            async for message in ws:
                if message.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                    continue
                data = message.data  # bytes for text frames too (decode_text=False)
                keep = await conn.feed(data if isinstance(data, bytes) else data.encode())
                if not keep:
                    await ws.close()
                    break
        finally:
            rt.connections.discard(conn)
            await conn.shutdown()
        return ws

    async def close_all(app: web.Application) -> None:
        for conn in list(rt.connections):
            await conn.close()

    app = web.Application()
    app.router.add_get("/", endpoint)
    app.router.add_get("/ws", endpoint)
    app.on_shutdown.append(close_all)
    return app


async def evict_others(rt: Runtime) -> None:
    """SINGLE_CLIENT knob: the runtime keeps only its newest client connection."""
    for other in list(rt.connections):
        log.info("EMULATOR single client: closing connection %d for a new one", other.id)
        rt.connections.discard(other)
        await other.close()


def machine_token_ok(request: web.Request, workdir: WorkDir) -> bool:
    """REQUIRE_MACHINE_TOKEN knob: the header must equal `cache/machine_token.json` `token`.

    The file is read per upgrade, so a test may rotate it; the Unix socket has no headers and
    stays open to local clients (its mode 0600 already limits who can connect).
    """
    expected = workdir.machine_token()
    given = request.headers.get(MACHINE_TOKEN_HEADER, "")
    return bool(expected) and hmac.compare_digest(given.encode(), expected.encode())


async def serve_ipc(rt: Runtime, path: Path) -> asyncio.Server:
    """The same protocol over a Unix stream socket (no WebSocket frames)."""
    handler = make_handler(rt)

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def sink(text: str) -> None:
            writer.write(text.encode())
            await writer.drain()

        async def closer() -> None:
            writer.close()

        conn = ClientConnection(sink=sink, closer=closer, handler=handler, knobs=rt.knobs)
        rt.connections.add(conn)
        conn.start()
        try:
            while data := await reader.read(READ_CHUNK):
                if not await conn.feed(data):
                    break
        except ConnectionError:
            pass
        finally:
            rt.connections.discard(conn)
            await conn.shutdown()
            writer.close()

    _remove_socket(path)
    server = await asyncio.start_unix_server(client, path=str(path))
    os.chmod(path, 0o600)
    return server


def _remove_socket(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


async def serve(options: StartOptions, knobs: Knobs, cloud: CloudKnobs | None = None) -> int:
    workdir = WorkDir(options.work_dir)
    workdir.root.mkdir(parents=True, exist_ok=True)
    workdir.clear_info()
    workdir.prepare()
    configure_logging(workdir.log_path, knobs.log_level)
    log.info(
        "EMULATOR %s %s starting (pid %d), workDir %s",
        EMULATOR_NAME,
        knobs.version,
        os.getpid(),
        workdir.root,
    )
    if options.copy_data_dir is not None:
        copied = workdir.copy_data_from(options.copy_data_dir)
        log.info("EMULATOR copied %d entries from --copyDataDir (login is never copied)", copied)
    log.info("EMULATOR using machine id from file: %s", workdir.machine_id())
    if knobs.require_machine_token:
        workdir.ensure_machine_token()
        log.info("EMULATOR WebSocket upgrades require %s", MACHINE_TOKEN_HEADER)
    instance = workdir.claim_instance()
    if instance is None:
        log.warning(
            "EMULATOR WARNING: another runtime instance runs on this work dir "
            "(two live instances on one work dir, lingma-protocol.md §7.5)"
        )
    rt = Runtime.create(knobs, workdir, cloud)
    if rt.user() is None:
        log.info("EMULATOR No cached user info, please login.")
    await asyncio.sleep(knobs.startup_delay_ms / 1000)
    return await _run(rt, options)


async def _run(rt: Runtime, options: StartOptions) -> int:
    try:
        ws_sock, http_sock = bind_tcp(options.socket_port), bind_tcp(options.http_port)
    except OSError:
        ports = f"{options.socket_port}/{options.http_port}"
        log.exception("EMULATOR cannot listen on 127.0.0.1 (ports %s)", ports)
        return LISTEN_FAILED_EXIT_CODE
    rt.ws_port, rt.http_port = ws_sock.getsockname()[1], http_sock.getsockname()[1]
    log.info("EMULATOR Using http server: %d", rt.http_port)
    http_app = build_http_app(rt)
    if rt.cloud.enabled:
        add_cloud_routes(http_app, _cloud_api(rt))
    runners = [
        web.AppRunner(build_ws_app(rt), shutdown_timeout=2.0),
        web.AppRunner(http_app, shutdown_timeout=2.0),
    ]
    ipc_server: asyncio.Server | None = None
    ipc = ipc_path() if rt.knobs.ipc else None
    try:
        for runner, sock in zip(runners, (ws_sock, http_sock), strict=True):
            await runner.setup()
            await web.SockSite(runner, sock).start()
        if ipc is not None:
            ipc_server = await serve_ipc(rt, ipc)
        ipc_text = str(ipc) if ipc else ""
        rt.workdir.write_info(
            SharedClientInfo(websocketPort=rt.ws_port, pid=os.getpid(), ipcServerPath=ipc_text)
        )
        if rt.cloud.enabled and rt.cloud.endpoint is EndpointAdvert.LOG:
            base = f"http://127.0.0.1:{rt.http_port}"
            log.info("EMULATOR Update endpoint success. endpoint config: %s", base)
        log.info(
            "EMULATOR Communication servers ready - WebSocket: %d, HTTP: %d, IPC: %s",
            rt.ws_port,
            rt.http_port,
            ipc_text,
        )
        noise = asyncio.create_task(make_noise(rt)) if rt.knobs.noise_ms else None
        await _wait_for_stop_signal()
        if noise is not None:
            noise.cancel()
        log.info("EMULATOR stopping")
    finally:
        if ipc_server is not None:
            ipc_server.close()
        for runner in runners:
            await runner.cleanup()
        if ipc is not None:
            _remove_socket(ipc)
    return 0


async def make_noise(rt: Runtime) -> None:
    """NOISE_MS knob: pushes that belong to no client's turn, to every connection, forever."""
    update = {"sessionUpdate": "agent_message_chunk", "content": {"type": "text", "text": "NOISE"}}
    other = {
        "sessionId": "noise-session",
        "_meta": {"ai-coding/request-id": "noise-request"},
        "update": update,
    }
    while True:
        await asyncio.sleep(rt.knobs.noise_ms / 1000)
        for conn in list(rt.connections):
            await conn.push("snapshot/syncAll", {})
            conn.notify("session/update", other)


def _cloud_api(rt: Runtime) -> CloudApi:
    """The cloud stand-in accepts the login this runtime holds (re-read when it changes)."""

    def logins() -> list[Login]:
        user = rt.user()
        return [Login.of(user, rt.workdir.machine_id())] if user is not None else []

    return CloudApi.create(rt.knobs, rt.cloud, logins, rt.scripts, rt.recorder)


async def _wait_for_stop_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
