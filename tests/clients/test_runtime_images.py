"""Images through the runtime backend with the real SDKs (issue 16 item 2): OpenAI chat
`image_url`, Responses `input_image` and Anthropic base64 `image` blocks reach the runtime as
ACP image items; the emulator's reply says what arrived, so the image's bytes made it."""

from __future__ import annotations

import base64
from typing import Any

import anthropic
import openai
import pytest

from tests.harness import DirectGateway

pytestmark = pytest.mark.clients

PNG_BYTES = b"\x89PNG\r\n\x1a\n" + bytes(56)
PNG = base64.b64encode(PNG_BYTES).decode()
JPEG_BYTES = b"\xff\xd8\xff\xe0" + bytes(28)
JPEG = base64.b64encode(JPEG_BYTES).decode()
SEEN_PNG = f"image/png, {len(PNG_BYTES)} bytes"


def image_records(gw: DirectGateway) -> list[dict[str, object]]:
    return [r for w in gw.workers for r in w.records() if "images" in r]


def test_openai_chat_streamed_and_not(gw: DirectGateway, oai: openai.OpenAI) -> None:
    messages: Any = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
            ],
        }
    ]
    reply = oai.chat.completions.create(model="auto", messages=messages)
    assert SEEN_PNG in (reply.choices[0].message.content or "")
    stream = oai.chat.completions.create(model="auto", messages=messages, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert SEEN_PNG in text
    assert image_records(gw)[-1]["context_params"] == 1


def test_responses_input_image(oai: openai.OpenAI) -> None:
    response = oai.responses.create(
        model="auto",
        input=[
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "and this?"},
                    {
                        "type": "input_image",
                        "image_url": f"data:image/jpeg;base64,{JPEG}",
                        "detail": "auto",
                    },
                ],
            }
        ],
    )
    assert f"image/jpeg, {len(JPEG_BYTES)} bytes" in response.output_text


def test_anthropic_base64_image(claude: anthropic.Anthropic) -> None:
    message = claude.messages.create(
        model="claude-x",
        max_tokens=256,
        messages=[
            {
                "role": "user",
                "content": [
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                    },
                    {"type": "text", "text": "describe it"},
                ],
            }
        ],
    )
    text = "".join(block.text for block in message.content if block.type == "text")
    assert SEEN_PNG in text and message.stop_reason == "end_turn"
