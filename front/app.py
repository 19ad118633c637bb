"""Runs in the front: the aiohttp application — its route table and the resources it owns.

The resources live as aiohttp cleanup contexts, so their order is written once: at start-up
the worker connections open, then the socket the supervisor pings, the shared key-limits table
and the usage recorder; at shutdown, once the HTTP server has stopped and in-flight requests are
done, they close in the reverse order — so the last request's usage row is sent too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from front import admin, anthropic, health, model_list, openai_chat, openai_responses
from front.context import CONTEXT, FrontContext
from front.control import FrontControlServer
from front.middleware import front_middleware, stamp_headers


async def worker_connections(app: web.Application) -> AsyncIterator[None]:
    pool = app[CONTEXT].pool
    await pool.start()
    yield
    await pool.close()


async def supervisor_socket(app: web.Application) -> AsyncIterator[None]:
    """The front's own Unix socket: Ping, stats, the worker set, Drain (front/control.py)."""
    control = FrontControlServer(app[CONTEXT])
    await control.start()
    yield
    await control.close()


async def key_limits_table(app: web.Application) -> AsyncIterator[None]:
    """The shared per-key limits table (front/keys.py), attached when the context was built."""
    yield
    app[CONTEXT].gate.close()


async def usage_recorder(app: web.Application) -> AsyncIterator[None]:
    """Usage rows to the supervisor in batches; the last batch goes after the last request."""
    usage = app[CONTEXT].usage
    usage.start()
    yield
    await usage.stop()


def build_app(ctx: FrontContext) -> web.Application:
    app = web.Application(middlewares=[front_middleware], client_max_size=ctx.spec.max_body_bytes)
    app[CONTEXT] = ctx
    app.on_response_prepare.append(stamp_headers)
    app.cleanup_ctx.append(worker_connections)
    app.cleanup_ctx.append(supervisor_socket)
    app.cleanup_ctx.append(key_limits_table)
    app.cleanup_ctx.append(usage_recorder)
    router = app.router
    router.add_get("/", health.root)
    router.add_get("/healthz", health.healthz)
    router.add_get("/readyz", health.readyz)
    router.add_get("/metrics", health.metrics)
    router.add_get("/v1/models", model_list.list_models)
    router.add_post("/v1/chat/completions", openai_chat.chat_completions)
    router.add_post("/v1/responses", openai_responses.responses)
    router.add_post("/responses", openai_responses.responses)
    router.add_post("/v1/messages", anthropic.messages)
    router.add_post("/v1/messages/count_tokens", anthropic.count_tokens)
    admin.add_admin_routes(app)
    return app
