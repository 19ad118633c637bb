"""Runs in the front: the reference gateway's /internal/* admin endpoints, routed to workers.

All require ADMIN_TOKEN (Bearer or x-admin-token) and refuse with 403 when it is unset.
`?instance=NAME` picks a worker (404 if unknown); without it the request goes to a suitable
worker (login: one not yet logged in) or, for status and stats, to all of them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import msgspec
from aiohttp import web

from front.auth import require_admin
from front.bodies import json_response
from front.context import CONTEXT, FrontContext
from front.control import front_stats
from front.errors import ApiError, ErrorKind, from_failure
from front.supervisor_link import ask_supervisor
from front.worker_pool import WorkerLink
from protocol.chat import Failure
from protocol.child_socket import ChildStats, Stats, StatsQuery
from protocol.framing import FrameError
from protocol.usage import UsageGrouping, UsageReply, UsageRequest, parse_since
from protocol.vocabulary import ErrorCode, LoginState
from protocol.worker_socket import (
    LoginBundle,
    LoginBundleQuery,
    LoginInfo,
    LoginStart,
    LoginStatusQuery,
    Models,
    ModelsQuery,
    ModelsRaw,
    ModelsRawQuery,
)

ADMIN_TIMEOUT_S = 30.0


def _admin_context(request: web.Request) -> FrontContext:
    ctx = request.app[CONTEXT]
    require_admin(request.headers, ctx.spec.admin_token)
    return ctx


def _pick(
    ctx: FrontContext, name: str | None, prefer: Callable[[WorkerLink], bool] | None = None
) -> WorkerLink:
    if name:
        link = ctx.pool.links.get(name)
        if link is None:
            raise ApiError(ErrorKind.NOT_FOUND, f"instance not found: {name}")
        return link
    links = [link for link in ctx.pool.links.values() if link.reachable]
    if not links:
        raise ApiError(ErrorKind.UNAVAILABLE, "no worker is reachable", retry_after=5.0)
    preferred = [link for link in links if prefer(link)] if prefer else []
    return (preferred or links)[0]


async def _ask(
    link: WorkerLink, make: Callable[[int], Any], expected: type, timeout: float = ADMIN_TIMEOUT_S
) -> Any:
    try:
        reply = await link.client.call(make, timeout)
    except TimeoutError:
        raise ApiError(ErrorKind.TIMEOUT, f"worker {link.name} did not answer in time") from None
    except (FrameError, OSError):
        raise ApiError(
            ErrorKind.UNAVAILABLE, f"worker {link.name} is unreachable", retry_after=5.0
        ) from None
    if isinstance(reply, Failure):
        if reply.code is ErrorCode.NOT_LOGGED_IN:
            raise ApiError(ErrorKind.CONFLICT, f"instance {link.name} is not logged in")
        raise from_failure(reply)
    if not isinstance(reply, expected):
        raise ApiError(ErrorKind.UPSTREAM, f"worker {link.name} sent an unexpected reply")
    return reply


def _login_json(link: WorkerLink, info: LoginInfo) -> dict[str, Any]:
    return {
        "instance": link.name,
        "login": info.login.value,
        "auto_login": info.auto_login,
        "url": info.url,
        "message": info.message,
        "user": info.user,
        "state": link.state,
    }


async def auto_login_start(request: web.Request) -> web.Response:
    ctx = _admin_context(request)
    link = _pick(
        ctx, request.query.get("instance"), prefer=lambda w: w.login != LoginState.LOGGED_IN.value
    )
    info: LoginInfo = await _ask(link, lambda i: LoginStart(id=i), LoginInfo)
    state = "already_logged_in" if info.login is LoginState.LOGGED_IN else info.auto_login
    return json_response({"ok": True, **_login_json(link, info), "state": state})


async def auto_login_status(request: web.Request) -> web.Response:
    ctx = _admin_context(request)

    async def one(link: WorkerLink) -> dict[str, Any]:
        try:
            info: LoginInfo = await _ask(
                link, lambda i: LoginStatusQuery(id=i), LoginInfo, timeout=5.0
            )
        except ApiError as err:
            return {"instance": link.name, "state": link.state, "error": err.message}
        return _login_json(link, info)

    instances = await asyncio.gather(*(one(link) for link in ctx.pool.links.values()))
    return json_response({"ok": True, "instances": list(instances)})


async def session_export(request: web.Request) -> web.Response:
    ctx = _admin_context(request)
    link = _pick(
        ctx, request.query.get("instance"), prefer=lambda w: w.login == LoginState.LOGGED_IN.value
    )
    bundle: LoginBundle = await _ask(link, lambda i: LoginBundleQuery(id=i), LoginBundle)
    return json_response(
        {
            "instance": link.name,
            "account": bundle.account,
            "raw_bytes": bundle.raw_bytes,
            "bundle_b64": bundle.bundle_b64,
        }
    )


async def models_raw(request: web.Request) -> web.Response:
    ctx = _admin_context(request)
    link = _pick(ctx, request.query.get("instance"), prefer=lambda w: w.ready)
    raw: ModelsRaw = await _ask(link, lambda i: ModelsRawQuery(id=i), ModelsRaw)
    models: Models = await _ask(link, lambda i: ModelsQuery(id=i), Models)
    return json_response(
        {
            "instance": link.name,
            "raw": raw.raw,
            "extracted_name_map": {m.key: m.display_name for m in models.models},
            "exposed_keys": [m.key for m in models.models],
            "aliases": models.aliases,
        }
    )


async def internal_stats(request: web.Request) -> web.Response:
    """The reference gateway's keys (`stats`, `concurrency`, `pool`, `session_cache`) and ours."""
    ctx = _admin_context(request)

    async def one(link: WorkerLink) -> tuple[dict[str, Any], ChildStats | None]:
        base = link.describe()
        try:
            stats: Stats = await _ask(link, lambda i: StatsQuery(id=i), Stats, timeout=5.0)
        except ApiError as err:
            return {**base, "error": err.message}, None
        return {**base, "stats": stats.stats}, stats.stats

    answers = await asyncio.gather(*(one(link) for link in ctx.pool.links.values()))
    reported = [stats for _, stats in answers if stats is not None]
    return json_response(
        {
            "ok": True,
            "stats": totals(reported),
            "session_cache": session_cache_totals(reported),
            "front": {"name": ctx.name, "state": ctx.state.value, "stats": front_stats(ctx)},
            "concurrency": {
                "max_in_flight": ctx.admission.max_in_flight,
                "in_flight": ctx.admission.in_flight,
                "queued": ctx.admission.queued,
                "rejected_total": ctx.admission.rejected_total,
            },
            "pool": [entry for entry, _ in answers],
        }
    )


def totals(reported: list[ChildStats]) -> dict[str, int]:
    """Counters summed over the accounts that answered (the reference's single-process view)."""
    return {
        "accounts_reporting": len(reported),
        "requests_total": sum(s.requests_total for s in reported),
        "failures_total": sum(s.failures_total for s in reported),
        "upstream_429_total": sum(s.upstream_429_total for s in reported),
        "prompt_tokens_total": sum(s.prompt_tokens_total for s in reported),
        "completion_tokens_total": sum(s.completion_tokens_total for s in reported),
        "in_flight": sum(s.in_flight for s in reported),
    }


def session_cache_totals(reported: list[ChildStats]) -> dict[str, float]:
    hits = sum(s.session_hits for s in reported)
    misses = sum(s.session_misses for s in reported)
    return {
        "entries": sum(s.sessions for s in reported),
        "hits": hits,
        "misses": misses,
        "hit_rate": round(hits / (hits + misses), 4) if hits + misses else 0.0,
    }


async def usage(request: web.Request) -> web.Response:
    """`lingma-gw usage --json` over HTTP: ?by=key|account|model&since=24h."""
    ctx = _admin_context(request)
    try:
        by = UsageGrouping(request.query.get("by", "key"))
        since_s = parse_since(request.query.get("since", "24h"))
    except ValueError as exc:
        raise ApiError(ErrorKind.BAD_REQUEST, f"{exc} (by: key, account or model)") from None
    reply = await ask_supervisor(ctx.spec.control_socket, UsageRequest(by=by, since_s=since_s), 10)
    if not isinstance(reply, UsageReply):
        raise ApiError(
            ErrorKind.UNAVAILABLE, "the supervisor did not answer the usage query", retry_after=5
        )
    return json_response(msgspec.to_builtins(reply))


def add_admin_routes(app: web.Application) -> None:
    app.router.add_post("/internal/auto-login/start", auto_login_start)
    app.router.add_get("/internal/auto-login/status", auto_login_status)
    app.router.add_post("/internal/session/export", session_export)
    app.router.add_get("/internal/models/raw", models_raw)
    app.router.add_get("/internal/stats", internal_stats)
    app.router.add_get("/internal/usage", usage)
