"""Test-only: calling the three chat APIs of a running front and reading their SSE streams."""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp

from tests.harness import API_KEY, DirectGateway, start_gateway
from tests.helpers import ChildProcesses

AUTH = {"Authorization": f"Bearer {API_KEY}"}
PATHS = {"chat": "/v1/chat/completions", "responses": "/v1/responses", "messages": "/v1/messages"}


@contextlib.contextmanager
def running_gateway(prefix: str, **options: Any) -> Iterator[DirectGateway]:
    """A gateway (tests/harness.py) in a fresh /tmp directory, removed with its processes."""
    root = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    children = ChildProcesses()
    try:
        yield start_gateway(children, root, **options)
    finally:
        children.kill_all()
        shutil.rmtree(root, ignore_errors=True)


@contextlib.asynccontextmanager
async def client_session(gateway: DirectGateway) -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP session on the gateway, with no emulator script in force."""
    gateway.set_script([])
    async with aiohttp.ClientSession(base_url=gateway.base_url) as session:
        yield session


def sse_events(raw: str) -> list[tuple[str, Any]]:
    """(event name or "", decoded data) per SSE event; `[DONE]` stays a string."""
    events: list[tuple[str, Any]] = []
    for block in raw.split("\n\n"):
        name, data = "", []
        for line in block.splitlines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
        if data:
            text = "\n".join(data)
            events.append((name, text if text == "[DONE]" else json.loads(text)))
    return events


async def post(
    http: aiohttp.ClientSession, api: str, body: dict[str, Any]
) -> tuple[int, Any, list[tuple[str, Any]]]:
    """(status, JSON body or None, SSE events or []) of one call."""
    async with http.post(PATHS.get(api, api), json=body, headers=AUTH) as response:
        raw = await response.read()
        if response.content_type == "text/event-stream":
            return response.status, None, sse_events(raw.decode())
        return response.status, json.loads(raw), []


def messages_body(text: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": "auto",
        "max_tokens": 512,
        "messages": [{"role": "user", "content": text}],
        **extra,
    }
