"""Runs in the front: small HTTP helpers shared by the API handlers (body decoding, JSON replies,
per-request metadata: request id, key scope, affinity, deadline)."""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections.abc import Callable
from typing import Any, TypeVar

import msgspec
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from front.auth import key_scope, presented_key
from front.context import CONTEXT, FrontContext
from front.errors import ApiError, ErrorKind, flavor_for_path
from front.image_fetch import ImageFetcher, fetch_url_images
from front.keys import check_model, key_name
from front.plan import ChatPlan
from front.relay import RequestMeta
from front.routing import affinity_hash
from front.usage import UsageRecorder
from protocol.keys import KeyEntry
from protocol.usage import UsageRow

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
    """Read and decode the JSON body into `body_type`; any problem is a 400 (413 if too big,
    408 if it does not arrive within the body deadline)."""
    spec = request.app[CONTEXT].spec
    declared = request.content_length
    if declared is not None and declared > spec.max_body_bytes:
        raise ApiError(ErrorKind.TOO_LARGE, "request body too large")  # before reading any
    try:
        async with asyncio.timeout(spec.body_timeout_s):
            raw = await request.read()
    except TimeoutError:
        raise ApiError(
            ErrorKind.REQUEST_TIMEOUT,
            f"the request body did not arrive within {spec.body_timeout_s:g}s",
        ) from None
    except (web.RequestPayloadError, HttpProcessingError):
        raise ApiError(
            ErrorKind.BAD_REQUEST,
            "the request body cannot be read: bad Content-Encoding or chunked framing",
        ) from None
    if not raw.strip():
        raise ApiError(ErrorKind.BAD_REQUEST, "request body is empty: send a JSON object")
    try:
        return msgspec.json.decode(raw, type=body_type)
    except msgspec.DecodeError as exc:
        raise ApiError(ErrorKind.BAD_REQUEST, _describe_decode_error(exc)) from None
    except RecursionError:
        raise ApiError(ErrorKind.BAD_REQUEST, "request body is nested too deeply") from None
    except UnicodeDecodeError:
        raise ApiError(ErrorKind.BAD_REQUEST, "request body is not valid UTF-8") from None


def json_response(
    payload: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=_json.encode(payload),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def request_meta(
    request: web.Request, ctx: FrontContext, api_key: str, source: str, *, stream: bool
) -> RequestMeta:
    """Per-chat metadata; also stores the affinity hash so the response echoes it."""
    scope = key_scope(api_key)
    affinity = affinity_hash(scope, source)
    request[AFFINITY] = affinity
    started = request.get(STARTED) or asyncio.get_running_loop().time()
    cap = total_cap(ctx.spec.stream_timeout_s if stream else ctx.spec.request_timeout_s)
    return RequestMeta(
        request_id=request.get(REQUEST_ID, ""),
        scope=scope,
        affinity=affinity,
        deadline=None if cap is None else started + cap,
        started=started,
    )


def total_cap(seconds: float) -> float | None:
    """A configured total cap: 0 (or less) means none. A stream still producing is never cut;
    the workers' first-token and silence timeouts end the ones that stall."""
    return seconds if seconds > 0 else None


async def admit_chat(
    request: web.Request, body_type: type[T], planner: Callable[..., ChatPlan]
) -> tuple[FrontContext, T, ChatPlan, RequestMeta]:
    """What every chat endpoint does first: the key, the body, the plan, the request's metadata."""
    ctx = request.app[CONTEXT]
    entry = authenticate(request)
    model = ""
    try:
        body = await read_body(request, body_type)
        plan = planner(
            body,
            default_model=ctx.spec.default_model,
            affinity_header=request.headers.get(AFFINITY_HEADER),
        )
        model = plan.model
        check_model(entry, model)
        if ctx.spec.fetch_image_urls and plan.images:
            fetcher = ImageFetcher(ctx.spec.image_fetch_timeout_s)
            await fetch_url_images(plan, fetcher, ctx.spec.max_body_bytes)
    except ApiError as err:  # a known key's bad request or forbidden model is on its record
        record_refusal(ctx.usage, request, entry, model, err.status)
        raise
    meta = request_meta(
        request, ctx, presented_key(request.headers), plan.affinity_source, stream=plan.stream
    )
    meta.key = entry
    return ctx, body, plan, meta


def record_refusal(
    recorder: UsageRecorder, request: web.Request, entry: KeyEntry | None, model: str, status: int
) -> None:
    latency_s = asyncio.get_running_loop().time() - request.get(STARTED, 0.0)
    recorder.add(
        UsageRow(
            ts=time.time() - latency_s,
            key=key_name(entry),
            account="",
            model=model,
            api=flavor_for_path(request.path).value,
            status=status,
            latency_ms=round(latency_s * 1000, 3),
            front=recorder.front,
            request_id=request.get(REQUEST_ID, ""),
        )
    )


def authenticate(request: web.Request) -> KeyEntry | None:
    """The request's named key (None in open mode), or a 401 in the path's API shape."""
    return request.app[CONTEXT].keys.authenticate(request.headers, time.time())
