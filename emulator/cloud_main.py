"""Runs as `lingma-emulator cloud`: the cloud API stand-in alone, without a runtime.

    lingma-emulator cloud --port N [--workDir D ...]

It accepts the logins found in the given work dirs (each `cache/user` re-read when it changes),
listens on 127.0.0.1 (port 0 picks one) and prints `EMULATOR cloud API ready - HTTP: <port>`
once serving. Knobs and script rules are the runtime emulator's (LINGMA_EMULATOR_*).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web

from emulator.cloud_auth import Login
from emulator.cloud_server import CloudApi, add_cloud_routes
from emulator.cloud_settings import CloudKnobs
from emulator.scripts import ScriptBook
from emulator.server import bind_tcp
from emulator.settings import EMULATOR_NAME, Knobs
from emulator.store import WorkDir
from emulator.turns import Recorder

log = logging.getLogger("lingma-emulator.cloud")
READY_LINE = "EMULATOR cloud API ready - HTTP: {port}"


def logins_of(work_dirs: Sequence[WorkDir]) -> list[Login]:
    found: list[Login] = []
    for workdir in work_dirs:
        user = workdir.read_user() if workdir.id_path.exists() else None
        if user is not None:
            found.append(Login.of(user, workdir.machine_id()))
    return found


def build_cloud_app(knobs: Knobs, cloud: CloudKnobs, work_dirs: Sequence[Path]) -> web.Application:
    dirs = [WorkDir(path) for path in work_dirs]
    api = CloudApi.create(
        knobs,
        cloud,
        lambda: logins_of(dirs),
        ScriptBook(knobs.script_path, knobs.reply_tokens),
        Recorder(knobs.record_path),
    )
    app = web.Application()
    app.router.add_get("/", _index)
    add_cloud_routes(app, api)
    return app


async def _index(request: web.Request) -> web.Response:
    return web.Response(text="lingma-emulator: cloud API stand-in (EMULATOR)\n")


async def serve_cloud(port: int, work_dirs: Sequence[Path], knobs: Knobs, cloud: CloudKnobs) -> int:
    logging.basicConfig(
        stream=sys.stderr,
        level=knobs.log_level,
        format=f"%(asctime)s %(levelname)s [{EMULATOR_NAME}] %(message)s",
    )
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    try:
        sock = bind_tcp(port)
    except OSError:
        log.exception("EMULATOR cannot listen on 127.0.0.1:%d", port)
        return 1
    runner = web.AppRunner(build_cloud_app(knobs, cloud, work_dirs), shutdown_timeout=2.0)
    await runner.setup()
    try:
        await web.SockSite(runner, sock).start()
        print(READY_LINE.format(port=sock.getsockname()[1]), flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()
    return 0
