"""Named-key refusals as the real SDKs raise them: 403 PermissionDenied, 429 RateLimit.

The shared gateway's front gets a second key the way the supervisor hands it one (a
`KeysUpdate` on the front's socket), limited to `auto` and one request per minute; its
refusals must surface as the SDKs' own exception types with the gateway's message.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from protocol.child_socket import Ok
from protocol.framing import open_framed
from protocol.front_socket import FrontReply
from protocol.keys import KeyEntry, KeyLimits, KeySource, KeysUpdate, secret_digest
from tests.harness import API_KEY, DirectGateway, api_key_entry

pytestmark = pytest.mark.clients

HELLO: Any = [{"role": "user", "content": "hello"}]


def push_keys(gw: DirectGateway, keys: list[KeyEntry]) -> None:
    async def push() -> None:
        stream = await open_framed(gw.spec.socket_path, FrontReply)
        try:
            await stream.send(KeysUpdate(id=1, keys=keys))
            assert isinstance(await stream.recv(), Ok)
        finally:
            await stream.close()

    asyncio.run(push())


@pytest.fixture
def limited_key(gateway: DirectGateway) -> Iterator[str]:
    secret = "sk-lgw-" + secrets.token_urlsafe(16)
    limits = KeyLimits(models=["auto"], rpm=1)
    entry = KeyEntry(
        name="sdk", sha256=secret_digest(secret), source=KeySource.CLI, slot=1, limits=limits
    )
    push_keys(gateway, [api_key_entry(API_KEY), entry])
    try:
        yield secret
    finally:
        push_keys(gateway, [api_key_entry(API_KEY)])


def test_sdks_raise_their_own_errors_for_key_limits(
    gateway: DirectGateway, limited_key: str
) -> None:
    oai = openai.OpenAI(base_url=f"{gateway.base_url}/v1", api_key=limited_key, max_retries=0)
    claude = anthropic.Anthropic(base_url=gateway.base_url, api_key=limited_key, max_retries=0)
    with pytest.raises(openai.PermissionDeniedError) as forbidden:
        oai.chat.completions.create(model="gpt-4o", messages=HELLO)
    assert "'sdk' may not use model 'gpt-4o' (allowed: auto)" in str(forbidden.value)
    with pytest.raises(anthropic.PermissionDeniedError):
        claude.messages.create(model="claude-sonnet-4-5", max_tokens=16, messages=HELLO)
    assert [m.id for m in oai.models.list().data] == ["auto"]  # only what it may use

    assert oai.chat.completions.create(model="auto", messages=HELLO).choices[0].message.content
    with pytest.raises(openai.RateLimitError) as limited:
        oai.chat.completions.create(model="auto", messages=HELLO)
    assert "over its limit of 1 requests per minute" in str(limited.value)
    assert int(limited.value.response.headers["retry-after"]) >= 50
    with pytest.raises(anthropic.RateLimitError):
        claude.messages.create(model="auto", max_tokens=16, messages=HELLO)
