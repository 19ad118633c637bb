"""Test-only: calling the three chat APIs of a running front and reading their SSE streams."""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from tests.harness import API_KEY

AUTH = {"Authorization": f"Bearer {API_KEY}"}
PATHS = {"chat": "/v1/chat/completions", "responses": "/v1/responses", "messages": "/v1/messages"}


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
