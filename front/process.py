"""Runs in the front: the front process — listen, serve, and stop by drain or handover.

`serve(spec)` owns the front's lifetime: listen (SO_REUSEPORT so several fronts share the
port), start the application (front/app.py: worker connections, the supervisor's socket),
wait for the first pings, serve, and on Drain or SIGTERM/SIGINT stop taking requests (or hand
over to a replacement), let in-flight ones finish within the grace period, then close
everything and return 0. `run` is the supervisor's spawn entry point.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import signal
import socket
import sys

import msgspec
import uvloop
from aiohttp import web

from front.app import build_app
from front.auth import log_auth_posture
from front.context import FrontContext, ServeState
from front.hardening import (
    FrontRunner,
    OneLineBadRequests,
    accept_queue_length,
    reject_unknown_expect,
)
from protocol.lifecycle import isolate_child
from protocol.logs import configure_logging
from protocol.specs import FrontSpec
from protocol.vocabulary import EXIT_CANNOT_START

log = logging.getLogger("front")

DEFAULT_SIGNAL_GRACE_S = 10.0
HANDOVER_QUIET_S = 1.0
FIRST_PING_WAIT_S = 3.0


def listen_socket(host: str, port: int, reuse_port: bool) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        sock.listen(1024)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


async def _hand_over(
    ctx: FrontContext,
    grace_s: float,
    sock: socket.socket,
    site: web.BaseSite,
    runner: web.AppRunner,
) -> float:
    """Stop listening, then give clients on open connections time to move to the replacement.

    Every reply now closes its connection, so an active client's next request connects to the
    replacement. Done when no connection is left, or when nothing has been in flight for a
    moment (idle keep-alive connections are then closed by the shutdown). Returns the grace
    left for the drain.
    """
    ctx.move_to(ServeState.HANDING_OVER)
    loop = asyncio.get_running_loop()
    # Under SO_REUSEPORT the kernel resets the connections still queued on a listener that
    # closes: close ours once its queue is empty (the check and the close do not yield).
    settle_until = loop.time() + 1.0
    while accept_queue_length(sock) and loop.time() < settle_until:  # noqa: ASYNC110 - kernel state
        await asyncio.sleep(0.005)
    await site.stop()
    deadline = loop.time() + grace_s
    quiet_since: float | None = None
    while loop.time() < deadline and runner.server is not None and runner.server.connections:
        if ctx.admission.in_flight:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = loop.time()
        elif loop.time() - quiet_since >= HANDOVER_QUIET_S:
            break
        await asyncio.sleep(0.05)
    return max(0.0, deadline - loop.time())


async def _drain(ctx: FrontContext, grace_s: float) -> None:
    """Refuse new requests (unless handing over), then wait for in-flight ones, within grace_s."""
    if ctx.state is not ServeState.HANDING_OVER:
        ctx.move_to(ServeState.DRAINING)
    deadline = asyncio.get_running_loop().time() + grace_s
    log.info("draining: %d in flight, grace %.1fs", ctx.admission.in_flight, grace_s)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout_at(deadline):
            await ctx.admission.wait_idle()
    if ctx.admission.in_flight:
        log.warning("grace period over: cancelling %d requests", ctx.admission.in_flight)


def _install_signals(ctx: FrontContext) -> None:
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        # A second signal means "now": no grace left.
        grace = 0.0 if ctx.drain_requested.is_set() else DEFAULT_SIGNAL_GRACE_S
        log.info("signal %s: drain with grace %.1fs", signal.Signals(signum).name, grace)
        ctx.request_drain(grace)

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)


async def serve(spec: FrontSpec) -> int:
    ctx = FrontContext.from_spec(spec)
    logging.getLogger("aiohttp.server").addFilter(OneLineBadRequests())
    log_auth_posture(
        keys=len(spec.keys), admin_token=spec.admin_token, metrics_public=spec.metrics_public
    )
    try:
        sock = listen_socket(spec.host, spec.port, spec.reuse_port)
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", spec.host, spec.port, exc)  # noqa: TRY400
        return EXIT_CANNOT_START if exc.errno in (errno.EACCES, errno.EADDRNOTAVAIL) else 1
    runner = FrontRunner(
        build_app(ctx),
        handler_cancellation=True,
        access_log=None,
        # Also the header deadline: a connection still without complete headers is closed.
        keepalive_timeout=spec.idle_timeout_s,
    )
    try:
        try:
            await runner.setup()  # the app's cleanup contexts start: workers, supervisor socket
        except OSError as exc:
            log.error("cannot serve the control socket %s: %s", spec.socket_path, exc)  # noqa: TRY400
            return EXIT_CANNOT_START
        await _serve_until_stopped(ctx, runner, sock)
    finally:
        await runner.cleanup()  # stops the server, then the cleanup contexts in reverse
        with contextlib.suppress(OSError):
            sock.close()
    log.info("front %d stopped", spec.index)
    return 0


async def _serve_until_stopped(
    ctx: FrontContext, runner: web.AppRunner, sock: socket.socket
) -> None:
    spec = ctx.spec
    assert runner.server is not None
    reject_unknown_expect(runner.server)
    await ctx.pool.first_pings(FIRST_PING_WAIT_S)  # meanwhile the kernel queues connections
    site = web.SockSite(runner, sock, shutdown_timeout=1.0)
    await site.start()
    _install_signals(ctx)
    ctx.move_to(ServeState.SERVING)
    log.info(
        "front %d listening on %s:%d, %d workers",
        spec.index,
        spec.host,
        spec.port,
        len(spec.workers),
    )
    await ctx.drain_requested.wait()
    order = ctx.drain_order
    assert order is not None
    grace = order.grace_s
    if order.handover:
        grace = await _hand_over(ctx, grace, sock, site, runner)
    await _drain(ctx, grace)


def _main(spec: FrontSpec) -> None:
    isolate_child()
    configure_logging(f"front:{spec.index}", spec.log_level)
    sys.exit(uvloop.run(serve(spec)))


def run(spec_bytes: bytes) -> None:
    """Process entry for the supervisor: a msgpack-encoded FrontSpec."""
    _main(msgspec.msgpack.decode(spec_bytes, type=FrontSpec))
