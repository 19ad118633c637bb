"""Runs in the emulator: the stand-in for Lingma's cloud chat API under /algo (§14.15).

Serves the real paths (chat SSE, model list, image upload with and without /algo, ping),
verifies every signature against the logins this emulator issued (cloud_auth.py), decodes
`Encode=1` bodies after checking the signature over the encoded text, answers from the same
script rules as the runtime side (scripts.py: replies, native tool calls in fragments, faults,
slow streams) and appends one JSON line per request to the record file (`"event": "cloud"`).
It runs inside the runtime emulator's HTTP server (LINGMA_EMULATOR_CLOUD=1) or standalone
(`lingma-emulator cloud`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import resources
from typing import Any

import msgspec
from aiohttp import web

from emulator.cloud_auth import LOGIN_EXPIRED, AuthVerdict, Login, Verifier
from emulator.cloud_reply import CloudReply, plan_reply, stream_reply
from emulator.cloud_settings import CloudKnobs, UploadPaths
from emulator.cloud_wire import ChatStreamWire, decode_body
from emulator.scripts import CloudFault, ScriptBook
from emulator.settings import Knobs
from emulator.turns import Recorder, sleep_ms

log = logging.getLogger("lingma-emulator.cloud")

CHAT_PATH = "/algo/api/v2/service/pro/sse/agent_chat_generation"
MODELS_PATH = "/algo/api/v2/model/list"
PING_PATH = "/algo/api/v1/ping"
UPLOAD_PATH = "/api/v2/image/upload"
MODELS_FIXTURE = "cloud_models.json"
REDACTED_HEADERS = frozenset({"authorization", "cosy-key"})


@dataclass
class CloudApi:
    knobs: Knobs
    cloud: CloudKnobs
    verifier: Verifier
    scripts: ScriptBook
    recorder: Recorder
    models: dict[str, Any]

    @classmethod
    def create(
        cls,
        knobs: Knobs,
        cloud: CloudKnobs,
        logins: Callable[[], Iterable[Login]],
        scripts: ScriptBook,
        recorder: Recorder,
    ) -> CloudApi:
        raw = (
            cloud.models_path.read_bytes()
            if cloud.models_path is not None
            else resources.files("emulator").joinpath(MODELS_FIXTURE).read_bytes()
        )
        verifier = Verifier(logins, date_window_s=cloud.date_window_s, always_expired=cloud.expired)
        return cls(knobs, cloud, verifier, scripts, recorder, msgspec.json.decode(raw))

    def record(self, request: web.Request, verdict: AuthVerdict, status: int, **extra: Any) -> None:
        headers = {
            name: value
            for name, value in request.headers.items()
            if name.lower() not in REDACTED_HEADERS
        }
        self.recorder.write_event(
            {
                "event": "cloud",
                "method": request.method,
                "path": request.path,
                "query": dict(request.query),
                "headers": headers,
                "auth": {"status": verdict.status, "code": verdict.code, "uid": verdict.uid},
                "status": status,
                **extra,
            }
        )


CLOUD_API = web.AppKey("cloud_api", CloudApi)


def _refusal(verdict: AuthVerdict) -> web.Response:
    content_type = "application/json" if verdict.code else "text/plain"
    return web.Response(status=verdict.status, body=verdict.body, content_type=content_type)


def _error(status: int, code: str, message: str, retry_after: int | None = None) -> web.Response:
    headers = {"Retry-After": str(retry_after)} if retry_after else None
    body = {"code": code, "message": f"{message} (EMULATOR)"}
    return web.json_response(body, status=status, headers=headers)


async def ping(request: web.Request) -> web.Response:
    return web.Response(text="pong")


async def model_list(request: web.Request) -> web.StreamResponse:
    api = request.app[CLOUD_API]
    verdict = api.verifier.check(request.headers, request.path, await request.read())
    if not verdict.ok:
        api.record(request, verdict, verdict.status)
        return _refusal(verdict)
    if api.cloud.models_fail:
        api.record(request, verdict, 500)
        return _error(500, "500", "model list unavailable")
    api.record(request, verdict, 200)
    return web.json_response(api.models)


async def upload(request: web.Request) -> web.StreamResponse:
    api = request.app[CLOUD_API]
    raw = await request.read()
    verdict = api.verifier.check(request.headers, request.path, raw)
    if not verdict.ok:
        api.record(request, verdict, verdict.status)
        return _refusal(verdict)
    try:
        body = msgspec.json.decode(raw)
        uri, request_id = body["ImageUri"], body["RequestId"]
    except (msgspec.DecodeError, KeyError, TypeError):
        api.record(request, verdict, 400)
        return _error(400, "400", "upload body must be {ImageUri, RequestId}")
    if not isinstance(uri, str) or not uri.startswith(("data:image/", "http://", "https://")):
        api.record(request, verdict, 400)
        return _error(400, "400", "ImageUri must be a data:image/ URL or an http(s) URL")
    digest = hashlib.sha256(uri.encode()).hexdigest()[:24]
    url = f"https://cdn.lingma-emulator.invalid/image/{digest}.png"
    api.record(request, verdict, 200, image={"bytes": len(uri), "url": url})
    data = {"Success": True, "ImageUrl": url, "RequestId": request_id}
    return web.json_response({"Data": data})


def _decoded_body(request: web.Request, raw: bytes) -> dict[str, Any] | None:
    try:
        body = decode_body(raw.decode()) if request.query.get("Encode") == "1" else raw
        parsed = msgspec.json.decode(body)
    except (ValueError, UnicodeDecodeError, msgspec.DecodeError):
        return None
    return parsed if isinstance(parsed, dict) else None


async def chat(request: web.Request) -> web.StreamResponse:
    api = request.app[CLOUD_API]
    raw = await request.read()
    verdict = api.verifier.check(request.headers, request.path, raw)
    if not verdict.ok:
        api.record(request, verdict, verdict.status, outcome="refused")
        return await _refuse_chat(request, api, verdict)
    body = _decoded_body(request, raw)
    messages = body.get("messages") if body is not None else None
    if body is None or not isinstance(messages, list) or not messages:
        api.record(request, verdict, 400, outcome="bad_request", body=body)
        return _error(400, "400", "the body must be JSON with a non-empty messages list")
    reply = plan_reply(api.scripts, api.cloud, body)
    fault = reply.answer.cloud_fault
    api.record(request, verdict, 200, outcome=fault.value if fault else "ok", body=body)
    early = _early_fault(reply)
    if early is not None or fault is CloudFault.EXPIRED:
        await sleep_ms(reply.answer.delay_ms)  # a slow refusal, as scripted
    if early is not None:
        return early
    if fault is CloudFault.EXPIRED:
        return await _refuse_chat(request, api, LOGIN_EXPIRED)
    return await stream_reply(request, api.knobs, api.cloud, reply)


def _early_fault(reply: CloudReply) -> web.Response | None:
    fault = reply.answer.cloud_fault
    if fault is CloudFault.RATE_LIMIT_HTTP:
        return _error(429, "429", "Too many requests", reply.answer.retry_after_s)
    if fault is CloudFault.SERVER_ERROR:
        return _error(500, "500", "Internal server error")
    return None


async def _refuse_chat(
    request: web.Request, api: CloudApi, verdict: AuthVerdict
) -> web.StreamResponse:
    """HTTP 403, or (CLOUD_AUTH_INBAND, signed requests only) HTTP 200 + one 403 envelope."""
    if not (api.cloud.auth_inband and verdict.code):
        return _refusal(verdict)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream;charset=UTF-8"})
    await response.prepare(request)
    await response.write(
        ChatStreamWire(api.cloud, "").error(verdict.status, verdict.code, verdict.message)
    )
    await response.write_eof()
    return response


def add_cloud_routes(app: web.Application, api: CloudApi) -> None:
    app[CLOUD_API] = api
    app.router.add_get(PING_PATH, ping)
    app.router.add_get(MODELS_PATH, model_list)
    app.router.add_post(CHAT_PATH, chat)
    if api.cloud.upload in (UploadPaths.ALGO, UploadPaths.BOTH):
        app.router.add_post("/algo" + UPLOAD_PATH, upload)
    if api.cloud.upload in (UploadPaths.BARE, UploadPaths.BOTH):
        app.router.add_post(UPLOAD_PATH, upload)


async def wait_forever() -> None:
    await asyncio.get_running_loop().create_future()
