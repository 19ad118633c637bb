"""Runs in the front: what happens around every request — ids, errors in the API's shape, drain.

`front_middleware` gives each request its id (the client's `x-request-id` when sane), refuses
new requests while the front drains for a shutdown, turns every `ApiError` and aiohttp HTTP
exception into a body in the path's API shape, turns anything unexpected into a 500 without a
traceback, and writes the access log line. `stamp_headers` puts the request id and the affinity
on every response, streamed or not, and closes the connection while the front is closing.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from front.context import (
    AFFINITY,
    AFFINITY_HEADER,
    CONTEXT,
    REQUEST_ID,
    STARTED,
    FrontContext,
    ServeState,
)
from front.errors import ApiError, ErrorKind, error_body, flavor_for_path
from protocol.logs import request_id_var

log = logging.getLogger("front")

_HTTP_KINDS = {
    404: ErrorKind.NOT_FOUND,
    405: ErrorKind.METHOD_NOT_ALLOWED,
    413: ErrorKind.TOO_LARGE,
}
_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
HEALTH_PATHS = ("/healthz", "/readyz")  # answered while draining, so balancers see it


def request_id_from(headers: Any) -> str:
    """The client's x-request-id when it is a sane token, else a fresh one."""
    given = str(headers.get("x-request-id", "")).strip()
    if _SAFE_REQUEST_ID.fullmatch(given):
        return given
    return f"req-{secrets.token_hex(6)}"


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
    if ctx.state is ServeState.DRAINING and request.path not in HEALTH_PATHS:
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


async def stamp_headers(request: web.Request, response: web.StreamResponse) -> None:
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
