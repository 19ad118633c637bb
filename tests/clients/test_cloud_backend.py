"""The cloud backend through the gateway's HTTP APIs: what only it does, or does differently.

Streaming spacing at the HTTP client, images in all three APIs (and the 400 where no account
can take an image URL), the follow-up turn's structure at the stand-in, upstream errors as HTTP
statuses, fail-over to the other account, and a stream cut after the first bytes.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import time
from typing import Any

import anthropic
import openai
import pytest

from protocol.channel import MuxClient
from protocol.worker_socket import ClearCooldown
from tests.harness import DirectGateway

pytestmark = pytest.mark.clients

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(24)).decode()
DATA_URL = f"data:image/png;base64,{PNG}"


@pytest.fixture
def cloud(cloud_gateway: DirectGateway) -> DirectGateway:
    cloud_gateway.set_script([])
    cloud_gateway.wait_ready()
    return cloud_gateway


def sdk(gateway: DirectGateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.base_url}/v1", api_key=gateway.api_key, max_retries=0)


def chat_bodies(gateway: DirectGateway) -> list[dict[str, Any]]:
    """Every chat body the stand-ins received, oldest first across both accounts."""
    records = [
        record
        for worker in gateway.workers
        for record in worker.records()
        if record.get("event") == "cloud" and record["path"].endswith("generation")
    ]
    return [record["body"] for record in sorted(records, key=lambda r: float(r["ts"]))]


def test_a_slow_stream_reaches_the_client_as_it_comes(cloud: DirectGateway) -> None:
    cloud.set_script([{"reply": "one two three four five six", "chunk_delay_ms": 150}])
    started = time.monotonic()
    arrivals: list[float] = []
    with sdk(cloud) as client:
        stream = client.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "slowly"}], stream=True
        )
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                arrivals.append(time.monotonic() - started)
    assert len(arrivals) >= 3 and arrivals[-1] - arrivals[0] >= 0.25
    assert all(later - earlier >= 0.08 for earlier, later in itertools.pairwise(arrivals))


def test_images_in_every_api(cloud: DirectGateway) -> None:
    with sdk(cloud) as client:
        chat = client.chat.completions.create(
            model="auto",
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "describe"},
                        {"type": "image_url", "image_url": {"url": DATA_URL}},
                    ],
                }
            ],
        )
        assert chat.choices[0].finish_reason == "stop"
        response = client.responses.create(
            model="auto",
            input=[
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "and this"},
                        {
                            "type": "input_image",
                            "image_url": "https://example.com/cat.png",
                            "detail": "auto",
                        },
                    ],
                }
            ],
        )
        assert response.output_text
    claude = anthropic.Anthropic(base_url=cloud.base_url, api_key=cloud.api_key, max_retries=0)
    message = claude.messages.create(
        model="claude-x",
        max_tokens=64,
        messages=[
            {
                "role": "user",
                "content": [
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                    },
                    {"type": "text", "text": "what is it"},
                ],
            }
        ],
    )
    assert message.stop_reason == "end_turn"
    with_images = [b for b in chat_bodies(cloud) if b.get("image_urls")]
    assert len(with_images) >= 3 and all(b["model_config"]["is_vl"] for b in with_images)


def test_image_urls_without_a_cloud_account_are_400(gw: DirectGateway) -> None:
    """The runtime needs an image's bytes; URLs are fetched only with [limits] fetch_image_urls."""
    url = "https://example.com/cat.png"
    with sdk(gw) as client, pytest.raises(openai.BadRequestError, match="fetch_image_urls"):
        client.chat.completions.create(
            model="auto",
            messages=[
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}
            ],
        )
    with sdk(gw) as client, pytest.raises(openai.BadRequestError, match="not supported"):
        client.chat.completions.create(
            model="auto",
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": "data:image/tiff;base64,AAAA"}}
                    ],
                }
            ],
        )


def test_rate_limit_is_429_with_retry_after(cloud: DirectGateway) -> None:
    cloud.set_script([{"cloud_fault": "rate_limit_http", "retry_after_s": 4}])
    try:
        with sdk(cloud) as client, pytest.raises(openai.RateLimitError) as caught:
            client.chat.completions.create(
                model="auto", messages=[{"role": "user", "content": "x"}]
            )
        assert caught.value.response.headers["Retry-After"] == "4"
    finally:
        cloud.set_script([])
        for worker in cloud.workers:  # both accounts cooled down: clear that for the next test
            worker_cooldown_clear(cloud, worker.spec.name)


def worker_cooldown_clear(gateway: DirectGateway, name: str) -> None:
    socket = next(w.spec.socket_path for w in gateway.workers if w.spec.name == name)

    async def clear() -> None:
        mux = MuxClient(socket)
        try:
            await mux.call(lambda i: ClearCooldown(id=i), 5.0)
        finally:
            await mux.close()

    asyncio.run(clear())
    gateway.wait_ready()


def test_5xx_fails_over_to_the_other_account(cloud: DirectGateway) -> None:
    broken, healthy = cloud.workers
    broken.set_script([{"cloud_fault": "server_error"}])  # this account answers 500, always
    served: list[str] = []
    with sdk(cloud) as client:
        for key in range(8):  # affinities spread first choices over both accounts
            reply = client.chat.completions.with_raw_response.create(
                model="auto",
                messages=[{"role": "user", "content": f"fail over {key}"}],
                extra_headers={"x-lingma-affinity": f"key-{key}"},
            )
            assert f"fail over {key}" in (reply.parse().choices[0].message.content or "")
            served.append(str((reply.parse().model_extra or {})["served_by"]))
    assert set(served) == {healthy.spec.name}
    failed = [r for r in broken.records() if r.get("outcome") == "server_error"]
    assert failed and len(failed) % 2 == 0  # each try there: one attempt and one local retry


def test_a_cut_stream_ends_in_an_error_not_a_short_answer(cloud: DirectGateway) -> None:
    cloud.set_script([{"cloud_fault": "cut", "reply": "alpha beta gamma delta epsilon zeta"}])
    received: list[str] = []
    with sdk(cloud) as client, pytest.raises(openai.APIError) as caught:
        stream = client.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "x"}], stream=True
        )
        for chunk in stream:
            received.append(chunk.choices[0].delta.content or "" if chunk.choices else "")
    assert "alpha" in "".join(received) and "broke off" in str(caught.value)


def test_follow_up_turns_are_structured_at_the_stand_in(cloud: DirectGateway) -> None:
    cloud.set_script(
        [{"match": "weather", "tool_call": {"name": "get_weather", "arguments": {"city": "Oslo"}}}]
    )
    claude = anthropic.Anthropic(base_url=cloud.base_url, api_key=cloud.api_key, max_retries=0)
    tools: Any = [{"name": "get_weather", "input_schema": {"type": "object"}}]
    question: Any = {"role": "user", "content": "weather in Oslo?"}
    first = claude.messages.create(
        model="claude-x", max_tokens=64, tools=tools, messages=[question]
    )
    [use] = [b for b in first.content if b.type == "tool_use"]
    result: Any = {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "cold"}],
    }
    claude.messages.create(
        model="claude-x",
        max_tokens=64,
        tools=tools,
        messages=[question, {"role": "assistant", "content": first.content}, result],
    )
    messages = chat_bodies(cloud)[-1]["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool"]
    assert messages[1]["tool_calls"][0]["id"] == use.id == messages[2]["tool_call_id"]
