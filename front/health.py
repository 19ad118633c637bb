"""Runs in the front: what balancers and operators ask — /, /healthz, /readyz and /metrics.

/healthz tells a load balancer three things apart: this front is up and can route (ready),
up but no account is READY (no_ready_account, still HTTP 200: restarting the front would not
help), and draining (503, take it out of rotation). /readyz is the same body with 503 for
anything but ready, for balancers and orchestrators that only read status codes. /metrics is
the supervisor's aggregate over every process (its own registry without a supervisor).
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from front.auth import require_metrics
from front.bodies import json_response
from front.chat_entry import authenticate
from front.context import CONTEXT, FrontContext, ServeState
from front.control import supervisor_metrics
from front.metrics import CONTENT_TYPE


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
        "keys": len(ctx.keys),
        "ledger": ctx.usage.health(),
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


async def metrics(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    spec = ctx.spec
    require_metrics(
        request.headers,
        authenticate=lambda _: authenticate(request),
        metrics_token=spec.metrics_token,
        public=spec.metrics_public,
    )
    text = await supervisor_metrics(spec.control_socket)
    body = text.encode() if text is not None else ctx.metrics.exposition()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})
