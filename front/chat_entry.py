"""Runs in the front: what every chat endpoint does first — the key, the body, the plan, the meta.

The same for OpenAI chat, Responses and Anthropic Messages: authenticate the named key (front/
keys.py; None in open mode), read the body as that API's Struct, build the `ChatPlan` with that
API's `Translation`, check the model against the key's allowed models, fetch http(s) image URLs
when the operator allowed it, and give the request its `RequestMeta` (request id, key scope,
affinity, deadline, the key). A known key's request refused here (bad body, forbidden model) is
a usage row too, so the key's record shows it. The affinity key is also kept on the request, so
the response echoes it in `x-lingma-affinity`.
"""

from __future__ import annotations

import asyncio
import time
from typing import TypeVar

from aiohttp import web

from front.auth import key_scope, presented_key
from front.bodies import read_body
from front.context import AFFINITY, AFFINITY_HEADER, CONTEXT, REQUEST_ID, STARTED, FrontContext
from front.errors import ApiError, flavor_for_path
from front.image_fetch import ImageFetcher, fetch_url_images
from front.keys import check_model, key_name
from front.plan import ChatPlan, RequestMeta, Translation, build_plan
from front.routing import affinity_hash
from front.usage import UsageRecorder
from protocol.keys import KeyEntry
from protocol.usage import UsageRow

B = TypeVar("B")


def total_cap(seconds: float) -> float | None:
    """A configured total cap: 0 (or less) means none. A stream still producing is never cut;
    the workers' first-token and silence timeouts end the ones that stall."""
    return seconds if seconds > 0 else None


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


async def admit_chat(
    request: web.Request, translation: Translation[B]
) -> tuple[FrontContext, B, ChatPlan, RequestMeta]:
    ctx = request.app[CONTEXT]
    entry = authenticate(request)
    model = ""
    try:
        body = await read_body(request, translation.body_type)
        plan = build_plan(
            translation,
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
