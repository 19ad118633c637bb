"""Runs in the front: small HTTP helpers shared by the API handlers (body decoding, JSON replies,
per-request metadata: request id, key scope, affinity, deadline)."""

from __future__ import annotations

import asyncio
import re
import secrets
from typing import Any, TypeVar

import msgspec
from aiohttp import web

from front.auth import key_scope
from front.context import FrontContext
from front.errors import ApiError, ErrorKind
from front.relay import RequestMeta
from front.routing import affinity_hash

T = TypeVar("T")

REQUEST_ID = web.RequestKey("request_id", str)
STARTED = web.RequestKey("started", float)
AFFINITY = web.RequestKey("affinity", str)
AFFINITY_HEADER = "x-lingma-affinity"

_json = msgspec.json.Encoder()
_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


def request_id_from(headers: Any) -> str:
    """The client's x-request-id when it is a sane token, else a fresh one."""
    given = str(headers.get("x-request-id", "")).strip()
    if _SAFE_REQUEST_ID.fullmatch(given):
        return given
    return f"req-{secrets.token_hex(6)}"


def _describe_decode_error(exc: msgspec.DecodeError) -> str:
    if isinstance(exc, msgspec.ValidationError):
        return f"invalid request body: {exc}"
    return f"request body is not valid JSON: {exc}"


async def read_body(request: web.Request, body_type: type[T]) -> T:
    """Read and decode the JSON body into `body_type`; any problem is a 400 (413 if too big)."""
    raw = await request.read()
    if not raw.strip():
        raise ApiError(ErrorKind.BAD_REQUEST, "request body is empty: send a JSON object")
    try:
        return msgspec.json.decode(raw, type=body_type)
    except msgspec.DecodeError as exc:
        raise ApiError(ErrorKind.BAD_REQUEST, _describe_decode_error(exc)) from None


def json_response(
    payload: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=_json.encode(payload),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def request_meta(request: web.Request, ctx: FrontContext, api_key: str, source: str) -> RequestMeta:
    """Per-chat metadata; also stores the affinity hash so the response echoes it."""
    scope = key_scope(api_key)
    affinity = affinity_hash(scope, source)
    request[AFFINITY] = affinity
    started = request.get(STARTED) or asyncio.get_running_loop().time()
    return RequestMeta(
        request_id=request.get(REQUEST_ID, ""),
        scope=scope,
        affinity=affinity,
        deadline=started + ctx.spec.request_timeout_s,
        started=started,
    )
