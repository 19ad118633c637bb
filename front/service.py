"""Runs in the front: the non-chat public endpoints — /, /healthz, /v1/models, /metrics.

/healthz tells a load balancer three things apart: this front is up and can route (ready),
up but no account is READY (no_ready_account, still HTTP 200: restarting the front would not
help), and draining (503, take it out of rotation). /readyz is the same body with 503 for
anything but ready, for balancers and orchestrators that only read status codes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiohttp import web

from front.auth import require_api_key, require_metrics
from front.context import CONTEXT, FrontContext, ServeState
from front.control import supervisor_metrics
from front.errors import ApiError, ErrorKind, no_ready_account_message
from front.httpkit import json_response
from front.metrics import CONTENT_TYPE
from front.relay import RECHECK_TIMEOUT_S
from front.worker_pool import WorkerLink
from protocol.framing import FrameError
from protocol.worker_socket import Models, ModelsQuery

log = logging.getLogger(__name__)

MODELS_TIMEOUT_S = 10.0


async def root(request: web.Request) -> web.Response:
    return json_response({"ok": True, "service": "lingma-gw"})


def health_payload(ctx: FrontContext) -> tuple[int, dict[str, Any]]:
    links = list(ctx.pool.links.values())
    ready = sum(1 for link in links if link.ready)
    if ctx.state.closing:
        status, code = "draining", 503
    elif ready:
        status, code = "ready", 200
    else:
        status, code = "no_ready_account", 200
    return code, {
        "ok": bool(ready) and ctx.state is ServeState.SERVING,
        "status": status,
        "time": int(time.time()),
        "front": ctx.name,
        "pool_size": len(links),
        "pool_ready": ready,
        "in_flight": ctx.admission.in_flight,
        "queued": ctx.admission.queued,
        "instances": [link.describe() for link in links],
    }


async def healthz(request: web.Request) -> web.Response:
    code, payload = health_payload(request.app[CONTEXT])
    return json_response(payload, status=code)


async def readyz(request: web.Request) -> web.Response:
    """/healthz for checkers that read only the status code: 503 unless an account is READY."""
    _, payload = health_payload(request.app[CONTEXT])
    code = 200 if payload["status"] == "ready" else 503
    headers = None if code == 200 else {"Retry-After": "2"}
    return json_response(payload, status=code, headers=headers)


async def query_models(link: WorkerLink) -> Models | None:
    try:
        reply = await link.client.call(lambda i: ModelsQuery(id=i), MODELS_TIMEOUT_S)
    except (FrameError, OSError, TimeoutError) as exc:
        log.warning("models query to %s failed: %s", link.name, type(exc).__name__)
        return None
    return reply if isinstance(reply, Models) else None


def model_entry(model_id: str, name: str) -> dict[str, Any]:
    """One entry readable by both SDKs: OpenAI's model object plus Anthropic's field names."""
    return {
        "id": model_id,
        "object": "model",
        "created": 0,
        "owned_by": "lingma",
        "name": name,
        "type": "model",
        "display_name": name,
        "created_at": "1970-01-01T00:00:00Z",
    }


def is_pattern(alias: str) -> bool:
    """An alias written as a glob (`claude-*`, `gpt-4?`, `o[13]*`): matches names, is not one."""
    return any(char in alias for char in "*?[")


def models_payload(replies: list[Models], configured_aliases: dict[str, str]) -> dict[str, Any]:
    """Real model keys, then plain aliases: never a glob, which no client could send as a model."""
    names: dict[str, str] = {}
    aliases: dict[str, str] = {}
    for reply in replies:
        for model in reply.models:
            names.setdefault(model.key, model.display_name or model.key)
        aliases.update(reply.aliases)
    aliases.update(configured_aliases)
    data = [model_entry(key, name) for key, name in names.items()]
    for alias, target in aliases.items():
        if alias not in names and not is_pattern(alias):
            data.append(model_entry(alias, f"{names.get(target, target)} (alias of {target})"))
    return {
        "object": "list",
        "data": data,
        "has_more": False,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }


async def list_models(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    require_api_key(request.headers, ctx.spec.api_keys)
    links = ctx.pool.ready_links()
    if not links:
        await ctx.pool.recheck(timeout=RECHECK_TIMEOUT_S)
        links = ctx.pool.ready_links()
    if not links:
        raise ApiError(
            ErrorKind.UNAVAILABLE,
            no_ready_account_message(action="list models"),
            retry_after=5.0,
        )
    answers = await asyncio.gather(*(query_models(link) for link in links))
    replies = [a for a in answers if a is not None]
    if not replies:
        raise ApiError(ErrorKind.UPSTREAM, "no worker answered the model query")
    return json_response(models_payload(replies, ctx.spec.model_aliases))


async def metrics(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    spec = ctx.spec
    require_metrics(
        request.headers,
        api_keys=spec.api_keys,
        metrics_token=spec.metrics_token,
        public=spec.metrics_public,
    )
    text = await supervisor_metrics(spec.control_socket)
    body = text.encode() if text is not None else ctx.metrics.exposition()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})
