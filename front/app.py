"""Runs in the front: the aiohttp application, its middleware, and the process entry points.

`serve(spec)` owns the front's lifetime: listen (SO_REUSEPORT so several fronts share the
port), connect to workers, serve, and on Drain or SIGTERM/SIGINT stop taking requests, let
in-flight ones finish within the grace period, then close everything and return 0.
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
from aiohttp.typedefs import Handler

from front import admin, anthropic, openai_chat, openai_responses, service
from front.auth import log_auth_posture
from front.context import CONTEXT, FrontContext, ServeState
from front.control import FrontControlServer
from front.errors import ApiError, ErrorKind, error_body, flavor_for_path
from front.hardening import (
    FrontRunner,
    OneLineBadRequests,
    accept_queue_length,
    reject_unknown_expect,
)
from front.httpkit import AFFINITY, AFFINITY_HEADER, REQUEST_ID, STARTED, request_id_from
from protocol.lifecycle import isolate_child
from protocol.logs import configure_logging, request_id_var
from protocol.specs import FrontSpec
from protocol.vocabulary import EXIT_CANNOT_START

log = logging.getLogger("front")

_HTTP_KINDS = {
    404: ErrorKind.NOT_FOUND,
    405: ErrorKind.METHOD_NOT_ALLOWED,
    413: ErrorKind.TOO_LARGE,
}
DEFAULT_SIGNAL_GRACE_S = 10.0
HANDOVER_QUIET_S = 1.0
FIRST_PING_WAIT_S = 3.0


def error_response(
    request: web.Request, err: ApiError, extra: dict[str, str] | None = None
) -> web.Response:
    headers = {**err.headers(), **(extra or {})}
    return web.Response(
        body=error_body(flavor_for_path(request.path), err),
        status=err.status,
        content_type="application/json",
        headers=headers,
    )


def _from_http_exception(exc: web.HTTPException, path: str) -> tuple[ApiError, dict[str, str]]:
    kind = _HTTP_KINDS.get(exc.status, ErrorKind.BAD_REQUEST)
    messages = {
        # The usual cause is a base URL with /v1 missing or doubled.
        ErrorKind.NOT_FOUND: f"unknown path {path[:200]}: OpenAI clients want the base URL "
        "http://HOST:PORT/v1, Anthropic clients and Claude Code http://HOST:PORT (no /v1)",
        ErrorKind.METHOD_NOT_ALLOWED: "method not allowed on this path",
        ErrorKind.TOO_LARGE: "request body too large",
    }
    extra = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else {}
    return ApiError(kind, messages.get(kind, exc.reason or "bad request")), extra


def _refuse_while_draining(ctx: FrontContext, request: web.Request) -> None:
    # In a handover the replacement listens already: what still comes on open connections is
    # served (HANDING_OVER); only a shutdown refuses it.
    if ctx.state is ServeState.DRAINING and request.path not in ("/healthz", "/readyz"):
        raise ApiError(
            ErrorKind.UNAVAILABLE, "this gateway process is shutting down", retry_after=1.0
        )


@web.middleware
async def front_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    ctx = request.app[CONTEXT]
    request_id = request_id_from(request.headers)
    request[REQUEST_ID] = request_id
    request[STARTED] = asyncio.get_running_loop().time()
    token = request_id_var.set(request_id)
    status = 500
    try:
        _refuse_while_draining(ctx, request)
        response: web.StreamResponse = await handler(request)
    except asyncio.CancelledError:
        status = 499  # the client went away (handler cancellation)
        raise
    except ApiError as err:
        status = err.status
        return error_response(request, err)
    except web.HTTPException as exc:
        mapped, extra = _from_http_exception(exc, request.path)
        status = mapped.status
        return error_response(request, mapped, extra)
    except Exception:
        log.exception("unhandled error serving %s %s", request.method, request.path)
        return error_response(
            request, ApiError(ErrorKind.INTERNAL, "internal error in the gateway")
        )
    else:
        status = response.status
        return response
    finally:
        if ctx.spec.access_log:
            elapsed_ms = (asyncio.get_running_loop().time() - request[STARTED]) * 1000
            log.info(
                "http %s %s -> %s in %.0fms",
                request.method,
                request.path,
                status,
                elapsed_ms,
                extra={"http_status": status, "elapsed_ms": round(elapsed_ms, 1)},
            )
        request_id_var.reset(token)


async def _stamp_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Every response, streamed or not, carries the request id and the affinity it was routed by."""
    request_id = request.get(REQUEST_ID)
    if request_id:
        response.headers["x-request-id"] = request_id
    affinity = request.get(AFFINITY)
    if affinity:
        response.headers[AFFINITY_HEADER] = affinity
    if request.app[CONTEXT].state.closing:
        # The client's next request opens a connection elsewhere. The header too: aiohttp
        # has already computed it when this hook runs, and a client that was promised
        # keep-alive would reuse a connection we close.
        response.force_close()
        response.headers["Connection"] = "close"


def build_app(ctx: FrontContext) -> web.Application:
    app = web.Application(middlewares=[front_middleware], client_max_size=ctx.spec.max_body_bytes)
    app[CONTEXT] = ctx
    app.on_response_prepare.append(_stamp_headers)
    router = app.router
    router.add_get("/", service.root)
    router.add_get("/healthz", service.healthz)
    router.add_get("/readyz", service.readyz)
    router.add_get("/metrics", service.metrics)
    router.add_get("/v1/models", service.list_models)
    router.add_post("/v1/chat/completions", openai_chat.chat_completions)
    router.add_post("/v1/responses", openai_responses.responses)
    router.add_post("/responses", openai_responses.responses)
    router.add_post("/v1/messages", anthropic.messages)
    router.add_post("/v1/messages/count_tokens", anthropic.count_tokens)
    admin.add_admin_routes(app)
    return app


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
        api_keys=spec.api_keys, admin_token=spec.admin_token, metrics_public=spec.metrics_public
    )
    try:
        sock = listen_socket(spec.host, spec.port, spec.reuse_port)
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", spec.host, spec.port, exc)  # noqa: TRY400
        return EXIT_CANNOT_START if exc.errno in (errno.EACCES, errno.EADDRNOTAVAIL) else 1
    control = FrontControlServer(ctx)
    try:
        await control.start()
    except OSError as exc:
        log.error("cannot serve the control socket %s: %s", spec.socket_path, exc)  # noqa: TRY400
        sock.close()
        return EXIT_CANNOT_START
    runner = FrontRunner(
        build_app(ctx),
        handler_cancellation=True,
        access_log=None,
        # Also the header deadline: a connection still without complete headers is closed.
        keepalive_timeout=spec.idle_timeout_s,
    )
    await runner.setup()
    assert runner.server is not None
    reject_unknown_expect(runner.server)
    try:
        await ctx.pool.start()
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
    finally:
        await runner.cleanup()
        await control.close()
        await ctx.pool.close()
        with contextlib.suppress(OSError):
            sock.close()
    log.info("front %d stopped", spec.index)
    return 0


def _main(spec: FrontSpec) -> None:
    isolate_child()
    configure_logging(f"front:{spec.index}", spec.log_level)
    sys.exit(uvloop.run(serve(spec)))


def run(spec_bytes: bytes) -> None:
    """Process entry for the supervisor: a msgpack-encoded FrontSpec."""
    _main(msgspec.msgpack.decode(spec_bytes, type=FrontSpec))
