"""Runs in the bench: the HTTP requests each scenario sends (OpenAI and Anthropic shapes)."""

from __future__ import annotations

from typing import Any

import msgspec

from bench.targets import HttpTarget

PROMPT = "hello"
GATEWAY_MODEL = "auto"  # a Lingma model key the emulator's catalogue knows

# One occurrence per relayed SSE chunk, and the first chunk that carries answer text.
OPENAI_MARKER = b"data: {"
OPENAI_FIRST_TOKEN = rb'"content": ?"[^"]'
ANTHROPIC_MARKER = b"event: content_block_delta"
ANTHROPIC_FIRST_TOKEN = rb'"text_delta", ?"text": ?"[^"]|"text": ?"[^"]+", ?"type": ?"text_delta"'


def openai_body(model: str, *, stream: bool, prompt: str = PROMPT) -> bytes:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": prompt}]}
    if stream:
        body["stream"] = True
    return msgspec.json.encode(body)


def openai_target(base_url: str, api_key: str, model: str, *, stream: bool) -> HttpTarget:
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
    return HttpTarget(
        url=f"{base_url}/v1/chat/completions",
        body=openai_body(model, stream=stream),
        headers=headers,
        marker=OPENAI_MARKER if stream else b"",
        first_token=OPENAI_FIRST_TOKEN if stream else b"",
    )


def anthropic_target(base_url: str, api_key: str, model: str) -> HttpTarget:
    """A streaming Messages API request, as the Anthropic SDK sends it."""
    body = {
        "model": model,
        # Above the long answer (4,000 words, about 6,000 tokens by the front's estimate), so
        # both APIs relay the same whole answer instead of Anthropic's stopping at max_tokens.
        "max_tokens": 32_000,
        "stream": True,
        "messages": [{"role": "user", "content": PROMPT}],
    }
    headers = {
        "x-api-key": api_key,
        "anthropic-version": "2023-06-01",
        "Content-Type": "application/json",
    }
    return HttpTarget(
        url=f"{base_url}/v1/messages",
        body=msgspec.json.encode(body),
        headers=headers,
        marker=ANTHROPIC_MARKER,
        first_token=ANTHROPIC_FIRST_TOKEN,
    )


def trivial_target(base_url: str) -> HttpTarget:
    return HttpTarget(url=f"{base_url}/trivial")
