"""The front's HTTP surface over a real worker: errors, headers, health, auth, admin, metrics."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDict

from front.auth import key_scope
from front.routing import affinity_hash
from tests.harness import (
    ADMIN_TOKEN,
    API_KEY,
    DirectGateway,
    front_spec,
    start_front,
    start_gateway,
)
from tests.helpers import ChildProcesses, wait_until, wait_until_async

pytestmark = pytest.mark.component

AUTH = {"Authorization": f"Bearer {API_KEY}"}
CHAT = {"model": "auto", "messages": [{"role": "user", "content": "hello"}]}


@pytest.fixture(scope="module")
def gateway() -> Iterator[DirectGateway]:
    root = Path(tempfile.mkdtemp(prefix="lgw-fh-", dir="/tmp"))
    children = ChildProcesses()
    try:
        yield start_gateway(children, root, workers=1, max_body_bytes=64 * 1024)
    finally:
        children.kill_all()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
async def http(gateway: DirectGateway) -> AsyncIterator[aiohttp.ClientSession]:
    gateway.set_script([])
    async with aiohttp.ClientSession(base_url=gateway.base_url) as session:
        yield session


async def call(
    http: aiohttp.ClientSession, method: str, path: str, **kw: Any
) -> tuple[int, CIMultiDict[str], Any]:
    async with http.request(method, path, **kw) as response:
        raw = await response.read()
        body = json.loads(raw) if raw and response.content_type == "application/json" else raw
        return response.status, CIMultiDict(response.headers), body


async def test_unknown_path_and_wrong_method_in_each_api_shape(http: aiohttp.ClientSession) -> None:
    status, _, body = await call(http, "GET", "/v1/nothing", headers=AUTH)
    assert status == 404 and body["error"]["code"] == "not_found"
    status, headers, body = await call(http, "GET", "/v1/chat/completions", headers=AUTH)
    assert status == 405 and body["error"]["code"] == "method_not_allowed"
    assert "POST" in headers["Allow"]
    status, _, body = await call(http, "GET", "/v1/messages", headers=AUTH)
    assert status == 405 and body["type"] == "error"


async def test_body_too_large_is_413(http: aiohttp.ClientSession) -> None:
    big = {"model": "auto", "messages": [{"role": "user", "content": "x" * 100_000}]}
    status, _, body = await call(http, "POST", "/v1/chat/completions", json=big, headers=AUTH)
    assert status == 413 and body["error"]["code"] == "request_too_large"
    status, _, body = await call(
        http, "POST", "/v1/messages", json=big, headers={"x-api-key": API_KEY}
    )
    assert status == 413 and body["error"]["type"] == "request_too_large"


async def test_malformed_bodies_are_400_in_the_api_shape(http: aiohttp.ClientSession) -> None:
    status, _, body = await call(http, "POST", "/v1/chat/completions", data=b"{nope", headers=AUTH)
    assert status == 400 and "not valid JSON" in body["error"]["message"]
    status, _, body = await call(http, "POST", "/v1/messages", json={"messages": 3}, headers=AUTH)
    assert status == 400 and body["error"]["type"] == "invalid_request_error"
    assert "$.messages" in body["error"]["message"]
    status, _, body = await call(http, "POST", "/v1/responses", data=b"", headers=AUTH)
    assert status == 400 and "empty" in body["error"]["message"]


async def test_request_id_and_affinity_headers(http: aiohttp.ClientSession) -> None:
    headers = {**AUTH, "x-request-id": "my-req-42", "x-lingma-affinity": "conversation-7"}
    status, got, _ = await call(http, "POST", "/v1/chat/completions", json=CHAT, headers=headers)
    assert status == 200 and got["x-request-id"] == "my-req-42"
    assert got["x-lingma-affinity"] == affinity_hash(key_scope(API_KEY), "hdr:conversation-7")
    _, generated, _ = await call(
        http, "GET", "/healthz", headers={"x-request-id": "bad id with spaces"}
    )
    assert generated["x-request-id"].startswith("req-")


async def test_streaming_headers(http: aiohttp.ClientSession) -> None:
    async with http.post(
        "/v1/chat/completions", json={**CHAT, "stream": True}, headers=AUTH
    ) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        assert response.headers["Cache-Control"].startswith("no-cache")
        assert response.headers["X-Accel-Buffering"] == "no"
        assert "x-lingma-affinity" in response.headers
        text = (await response.read()).decode()
    assert text.endswith("data: [DONE]\n\n")


async def test_health_root_and_no_secrets(
    http: aiohttp.ClientSession, gateway: DirectGateway
) -> None:
    async def settled() -> bool:  # the worker's own count of a previous test's chats reaches 0
        body = (await call(http, "GET", "/healthz"))[2]
        return bool(body["instances"][0]["worker_in_flight"] == 0)

    await wait_until_async(settled, 10, "the previous tests' chats to end on the worker")
    status, _, body = await call(http, "GET", "/healthz")
    assert status == 200 and body["ok"] is True and body["status"] == "ready"
    ready_status, _, ready_body = await call(http, "GET", "/readyz")
    assert ready_status == 200 and ready_body["status"] == "ready"
    assert body["instances"][0] == {
        "name": "acct-0",
        "state": "ready",
        "login": "logged_in",
        "backend": "runtime",
        "ready": True,
        "in_flight": 0,
        "worker_in_flight": 0,
    }
    text = json.dumps(body)
    assert API_KEY not in text and ".sock" not in text and ADMIN_TOKEN not in text
    async with http.head("/") as response:
        assert response.status == 200
    assert (await call(http, "GET", "/"))[0] == 200


async def test_missing_key_is_401(http: aiohttp.ClientSession) -> None:
    for path in (
        "/v1/models",
        "/v1/chat/completions",
        "/v1/responses",
        "/v1/messages/count_tokens",
    ):
        method = "GET" if path == "/v1/models" else "POST"
        status, _, body = await call(http, method, path, json=CHAT)
        assert status == 401, path
        assert "error" in body


async def test_metrics_needs_a_key_and_counts_requests(http: aiohttp.ClientSession) -> None:
    assert (await call(http, "GET", "/metrics"))[0] == 401
    await call(http, "POST", "/v1/chat/completions", json=CHAT, headers=AUTH)
    status, headers, body = await call(http, "GET", "/metrics", headers=AUTH)
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = body.decode()
    assert (
        'lingma_gw_http_requests_total{account="acct-0",api="openai",model="auto",status="200"}'
        in text
    )
    assert "lingma_gw_time_to_first_token_seconds_bucket" in text
    assert "lingma_gw_front_queue_depth 0.0" in text


async def test_admin_endpoints(http: aiohttp.ClientSession) -> None:
    admin = {"x-admin-token": ADMIN_TOKEN}
    assert (await call(http, "GET", "/internal/stats", headers=AUTH))[0] == 401
    status, _, stats = await call(http, "GET", "/internal/stats", headers=admin)
    assert status == 200 and stats["pool"][0]["name"] == "acct-0"
    assert "requests_total" in stats["pool"][0]["stats"] and stats["concurrency"]["in_flight"] == 0
    status, _, logins = await call(http, "GET", "/internal/auto-login/status", headers=admin)
    assert status == 200 and logins["instances"][0]["login"] == "logged_in"
    bearer = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    status, _, raw = await call(http, "GET", "/internal/models/raw?instance=acct-0", headers=bearer)
    assert status == 200 and "auto" in raw["exposed_keys"] and raw["raw"]
    assert (await call(http, "GET", "/internal/models/raw?instance=nope", headers=admin))[0] == 404
    status, _, bundle = await call(http, "POST", "/internal/session/export", headers=admin)
    assert status == 200 and bundle["instance"] == "acct-0" and bundle["raw_bytes"] > 0
    status, _, started = await call(http, "POST", "/internal/auto-login/start", headers=admin)
    assert status == 200 and started["state"] == "already_logged_in"


async def test_admin_refuses_without_admin_token(gateway: DirectGateway) -> None:
    children = ChildProcesses()
    root = Path(tempfile.mkdtemp(prefix="lgw-fa-", dir="/tmp"))
    try:
        spec = front_spec(root, gateway.workers, admin_token="", keys=[], metrics_public=True)
        proc = start_front(children, root, spec)
        base = f"http://127.0.0.1:{spec.port}"

        def up() -> bool:
            assert proc.poll() is None, (root / "front.log").read_text()
            return (root / "front.log").exists() and "listening" in (root / "front.log").read_text()

        wait_until(up, 10, "second front")
        async with aiohttp.ClientSession(base_url=base) as http:
            status, _, body = await call(
                http, "GET", "/internal/stats", headers={"x-admin-token": "x"}
            )
            assert status == 403 and "ADMIN_TOKEN is not set" in body["error"]["message"]
            assert (await call(http, "GET", "/metrics"))[0] == 200  # METRICS_PUBLIC
        log = (root / "front.log").read_text()
        assert "AUTH DISABLED" in log and "ADMIN_TOKEN not set" in log and "METRICS_PUBLIC" in log
    finally:
        children.kill_all()
        shutil.rmtree(root, ignore_errors=True)
