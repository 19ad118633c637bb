"""The official anthropic SDK against the gateway: messages, streaming, tools, thinking, errors."""

from __future__ import annotations

from typing import Any

import anthropic
import pytest

from tests.clients.conftest import BACKENDS, is_cloud
from tests.harness import DirectGateway

# Every test runs against a runtime-backend and a cloud-backend gateway.
pytestmark = [pytest.mark.clients, pytest.mark.parametrize("gw", BACKENDS, indirect=True)]

THINKING_MODEL = "dashscope_qwen_plus_20250428_thinking"
WEATHER: Any = {
    "name": "get_weather",
    "description": "Current weather for a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
TOOL_RULES: list[dict[str, Any]] = [
    {"match": "Tool result", "reply": "It is sunny in Paris."},
    {"match": "weather", "tool_call": {"name": "get_weather", "arguments": {"city": "Paris"}}},
]


def block_text(block: Any) -> str:
    """The text of a text or thinking block (typed SDK unions made plain)."""
    return str(getattr(block, "text", None) or getattr(block, "thinking", ""))


def test_messages_non_streaming(claude: anthropic.Anthropic) -> None:
    message = claude.messages.create(
        model="claude-via-lingma",
        max_tokens=1024,
        system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        messages=[{"role": "user", "content": "hello claude"}],
        metadata={"user_id": "u-7"},
    )
    assert message.content[0].type == "text" and "You said: hello claude" in message.content[0].text
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0


def test_messages_streaming(claude: anthropic.Anthropic) -> None:
    with claude.messages.stream(
        model="claude-via-lingma",
        max_tokens=1024,
        messages=[{"role": "user", "content": "stream claude"}],
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert "You said: stream claude" in text
    assert final.stop_reason == "end_turn" and final.usage.output_tokens > 0


def test_tool_use_round_trip(gw: DirectGateway, claude: anthropic.Anthropic) -> None:
    gw.set_script(TOOL_RULES)
    question: Any = {"role": "user", "content": "What's the weather in Paris?"}
    first = claude.messages.create(
        model="claude-via-lingma", max_tokens=512, tools=[WEATHER], messages=[question]
    )
    assert first.stop_reason == "tool_use"
    [use] = [b for b in first.content if b.type == "tool_use"]
    assert use.name == "get_weather" and use.input == {"city": "Paris"}
    # Emulated calls get Anthropic-style ids; cloud calls keep the id the cloud gave them.
    assert use.id.startswith("call_" if is_cloud(gw) else "toolu_")
    assistant_turn: Any = {"role": "assistant", "content": first.content}
    result: Any = {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "clear skies"}],
    }
    with claude.messages.stream(
        model="claude-via-lingma",
        max_tokens=512,
        tools=[WEATHER],
        messages=[question, assistant_turn, result],
    ) as stream:
        final = stream.get_final_message()
    assert final.content[0].type == "text" and final.content[0].text == "It is sunny in Paris."


def test_tool_use_streamed(gw: DirectGateway, claude: anthropic.Anthropic) -> None:
    gw.set_script(TOOL_RULES)
    with claude.messages.stream(
        model="claude-via-lingma",
        max_tokens=512,
        tools=[WEATHER],
        tool_choice={"type": "tool", "name": "get_weather"},
        messages=[{"role": "user", "content": "weather?"}],
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert [b.type for b in final.content] == ["tool_use"]


def test_thinking_blocks(claude: anthropic.Anthropic) -> None:
    with claude.messages.stream(
        model=THINKING_MODEL,
        max_tokens=2048,
        thinking={"type": "enabled", "budget_tokens": 1024},
        messages=[{"role": "user", "content": "think about it"}],
    ) as stream:
        final = stream.get_final_message()
    kinds = [b.type for b in final.content]
    assert kinds == ["thinking", "text"]
    assert "thinking about" in block_text(final.content[0])


def test_stop_sequence_and_max_tokens(gw: DirectGateway, claude: anthropic.Anthropic) -> None:
    gw.set_script(
        [{"match": "count", "reply": "one two three STOP four five six seven eight nine ten"}]
    )
    stopped = claude.messages.create(
        model="auto",
        max_tokens=512,
        stop_sequences=["STOP"],
        messages=[{"role": "user", "content": "count"}],
    )
    assert stopped.stop_reason == "stop_sequence" and stopped.stop_sequence == "STOP"
    assert block_text(stopped.content[0]) == "one two three "
    short = claude.messages.create(
        model="auto", max_tokens=2, messages=[{"role": "user", "content": "count"}]
    )
    assert short.stop_reason == "max_tokens" and len(block_text(short.content[0])) <= 8


def test_count_tokens(claude: anthropic.Anthropic) -> None:
    counted = claude.messages.count_tokens(
        model="claude-via-lingma", messages=[{"role": "user", "content": "x" * 400}]
    )
    assert 100 <= counted.input_tokens <= 110


def test_beta_client_path(gw: DirectGateway) -> None:
    client = anthropic.Anthropic(base_url=gw.base_url, api_key=gw.api_key, max_retries=0)
    message = client.beta.messages.create(
        model="claude-via-lingma",
        max_tokens=64,
        betas=["interleaved-thinking-2025-05-14"],
        messages=[{"role": "user", "content": "beta hello"}],
    )
    assert "You said: beta hello" in block_text(message.content[0])


def test_errors_in_anthropic_shape(gw: DirectGateway, claude: anthropic.Anthropic) -> None:
    bad = anthropic.Anthropic(base_url=gw.base_url, api_key="wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as auth:
        bad.messages.create(model="auto", max_tokens=8, messages=[{"role": "user", "content": "x"}])
    auth_body: Any = auth.value.body
    assert auth_body["type"] == "error"
    assert auth_body["error"]["type"] == "authentication_error"
    assert auth_body["error"]["message"].startswith("invalid API key: use a key from")
    with pytest.raises(anthropic.BadRequestError) as bad_body:
        claude.messages.create(
            model="auto",
            max_tokens=8,
            messages=[{"role": "wizard", "content": "x"}],  # type: ignore[misc,list-item]
        )
    assert "unknown message role" in str(bad_body.value)
    with pytest.raises(anthropic.NotFoundError) as unknown:
        claude.messages.create(
            model="no-such-model", max_tokens=8, messages=[{"role": "user", "content": "x"}]
        )
    body: Any = unknown.value.body
    assert body["error"]["type"] == "not_found_error"


def test_models_list(gw: DirectGateway, claude: anthropic.Anthropic) -> None:
    ids = [m.id for m in claude.models.list()]
    assert ("org_auto" if is_cloud(gw) else "auto") in ids and "house-model" in ids
