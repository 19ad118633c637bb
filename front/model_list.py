"""Runs in the front: GET /v1/models — every READY account's models, and the configured aliases.

The workers answer `ModelsQuery`; the list is the union of their model keys, then every plain
alias (never a glob pattern, which no client could send as a model name). One entry reads in
both SDKs: OpenAI's model object plus Anthropic's field names.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web

from front.bodies import json_response
from front.chat_entry import authenticate
from front.context import CONTEXT
from front.errors import ApiError, ErrorKind, no_ready_account_message
from front.keys import allowed_models
from front.worker_pool import RECHECK_TIMEOUT_S, WorkerLink
from protocol.framing import FrameError
from protocol.worker_socket import Models, ModelsQuery

log = logging.getLogger(__name__)

MODELS_TIMEOUT_S = 10.0


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
    entry = authenticate(request)
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
    payload = models_payload(replies, ctx.spec.model_aliases)
    shown = set(allowed_models(entry, [model["id"] for model in payload["data"]]))
    payload["data"] = [model for model in payload["data"] if model["id"] in shown]
    return json_response(payload)
