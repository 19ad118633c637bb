"""Runs in the front: what every chat endpoint does first — the key, the body, the plan, the meta.

The same for OpenAI chat, Responses and Anthropic Messages: check the API key, read the body
as that API's Struct, build the `ChatPlan` with that API's `Translation`, and give the request
its `RequestMeta` (request id, key scope, affinity, deadline). The affinity key is also kept on
the request, so the response echoes it in `x-lingma-affinity`.
"""

from __future__ import annotations

import asyncio
from typing import TypeVar

from aiohttp import web

from front.auth import key_scope, require_api_key
from front.bodies import read_body
from front.context import AFFINITY, AFFINITY_HEADER, CONTEXT, REQUEST_ID, STARTED, FrontContext
from front.plan import ChatPlan, RequestMeta, Translation, build_plan
from front.routing import affinity_hash

B = TypeVar("B")


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


async def admit_chat(
    request: web.Request, translation: Translation[B]
) -> tuple[FrontContext, B, ChatPlan, RequestMeta]:
    ctx = request.app[CONTEXT]
    api_key = require_api_key(request.headers, ctx.spec.api_keys)
    body = await read_body(request, translation.body_type)
    plan = build_plan(
        translation,
        body,
        default_model=ctx.spec.default_model,
        affinity_header=request.headers.get(AFFINITY_HEADER),
    )
    return ctx, body, plan, request_meta(request, ctx, api_key, plan.affinity_source)
