"""Request translation: each API's body becomes the same ChatPlan; bad input is a clear 400."""

from __future__ import annotations

import msgspec
import pytest

from front.anthropic import plan_messages
from front.errors import ApiError, ErrorKind
from front.openai_chat import plan_chat
from front.openai_responses import plan_responses
from front.plan import ChatPlan
from front.schemas_anthropic import MessagesBody
from front.schemas_openai import ChatCompletionsBody, ResponsesBody
from front.tools import ACTION_FENCE_OPEN

pytestmark = pytest.mark.unit

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather by city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def chat(body: dict[str, object]) -> ChatPlan:
    decoded = msgspec.convert(body, ChatCompletionsBody)
    return plan_chat(decoded, default_model="auto", affinity_header=None)


def responses(body: dict[str, object]) -> ChatPlan:
    return plan_responses(
        msgspec.convert(body, ResponsesBody), default_model="auto", affinity_header=None
    )


def anthropic(body: dict[str, object]) -> ChatPlan:
    return plan_messages(
        msgspec.convert(body, MessagesBody), default_model="auto", affinity_header=None
    )


def roles(plan: ChatPlan) -> list[str]:
    return [m.role for m in plan.messages]


def test_chat_basic_fields() -> None:
    plan = chat(
        {
            "model": "qwen",
            "messages": [
                {"role": "developer", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
            ],
            "max_completion_tokens": 50,
            "stop": "END",
            "stream": True,
            "stream_options": {"include_usage": True},
            "temperature": 0.2,
            "user": "alice",
            "seed": 1,
            "logit_bias": {"1": 2},
        }
    )
    assert roles(plan) == ["system", "user"]
    assert (plan.model, plan.max_tokens, plan.stop, plan.stream, plan.include_usage) == (
        "qwen",
        50,
        ["END"],
        True,
        True,
    )
    assert plan.affinity_source == "user:alice"


def test_chat_default_model_and_affinity_from_system() -> None:
    plan = chat(
        {"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]}
    )
    assert plan.model == "auto" and plan.affinity_source.startswith("sys:")


def test_chat_tools_history_round_trip() -> None:
    plan = chat(
        {
            "model": "qwen",
            "messages": [
                {"role": "system", "content": "S"},
                {"role": "user", "content": "Weather in Paris?"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            ],
            "tools": [WEATHER_TOOL],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        }
    )
    assert roles(plan) == ["system", "system", "user", "assistant", "tool"]
    assert ACTION_FENCE_OPEN in plan.messages[1].text  # instructions after the client's system
    assert '"tool": "get_weather"' in plan.messages[3].text
    assert "get_weather (call call_1)" in plan.messages[4].text and "sunny" in plan.messages[4].text
    assert plan.tool_choice == "get_weather"
    assert plan.tools[0].parameters_json.startswith('{"type":"object"')


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"messages": [{"role": "user", "content": "x"}], "n": 2}, "n > 1"),
        ({"messages": []}, "messages is empty"),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}
                ]
            },
            "image",
        ),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "unknown message role"),
        (
            {"messages": [{"role": "user", "content": "x"}], "tool_choice": "required"},
            "needs at least one tool",
        ),
        (
            {
                "messages": [{"role": "user", "content": "x"}],
                "tools": [WEATHER_TOOL],
                "tool_choice": {"type": "function", "function": {"name": "nope"}},
            },
            "undeclared",
        ),
        ({"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}, "at least 1"),
    ],
)
def test_chat_bad_input_is_400(body: dict[str, object], needle: str) -> None:
    with pytest.raises(ApiError) as info:
        chat(body)
    assert info.value.kind is ErrorKind.BAD_REQUEST and needle in info.value.message


def test_chat_legacy_functions() -> None:
    plan = chat(
        {
            "messages": [{"role": "user", "content": "x"}],
            "functions": [WEATHER_TOOL["function"]],
            "function_call": {"name": "get_weather"},
        }
    )
    assert plan.tool_choice == "get_weather"


def test_responses_items() -> None:
    plan = responses(
        {
            "model": "qwen",
            "instructions": "Be brief.",
            "input": [
                {"role": "user", "content": [{"type": "input_text", "text": "Weather?"}]},
                {
                    "type": "function_call",
                    "call_id": "call_9",
                    "name": "get_weather",
                    "arguments": '{"city":"Oslo"}',
                },
                {"type": "function_call_output", "call_id": "call_9", "output": "rain"},
                {"type": "reasoning", "id": "rs_1", "summary": []},
            ],
            "tools": [
                {"type": "function", "name": "get_weather", "parameters": {}},
                {"type": "web_search"},
            ],
            "max_output_tokens": 30,
        }
    )
    assert roles(plan) == ["system", "system", "user", "assistant", "tool"]
    assert [t.name for t in plan.tools] == ["get_weather"]
    assert "rain" in plan.messages[-1].text and plan.max_tokens == 30


def test_responses_string_input_and_errors() -> None:
    assert roles(responses({"input": "hello"})) == ["user"]
    with pytest.raises(ApiError, match="previous_response_id"):
        responses({"input": "x", "previous_response_id": "resp_1"})
    with pytest.raises(ApiError, match="image URLs must be http"):
        responses(
            {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]}
        )


def test_anthropic_blocks() -> None:
    plan = anthropic(
        {
            "model": "claude-x",
            "max_tokens": 100,
            "system": [
                {"type": "text", "text": "S1", "cache_control": {"type": "ephemeral"}},
                {"type": "text", "text": "S2"},
            ],
            "messages": [
                {"role": "user", "content": "Weather?"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                        {"type": "text", "text": "Checking."},
                        {
                            "type": "tool_use",
                            "id": "toolu_1",
                            "name": "get_weather",
                            "input": {"city": "Rome"},
                        },
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "toolu_1",
                            "content": [
                                {"type": "text", "text": "hot"},
                                {"type": "image", "source": {}},
                            ],
                        },
                        {"type": "text", "text": "Thanks, and tomorrow?"},
                    ],
                },
            ],
            "tools": [
                {"name": "get_weather", "description": "d", "input_schema": {"type": "object"}},
                {"type": "web_search_20250305", "name": "web_search"},
            ],
            "tool_choice": {"type": "any"},
            "stop_sequences": ["\n\nHuman:"],
            "metadata": {"user_id": "u-1"},
        }
    )
    assert plan.messages[0].text == "S1\nS2"
    assert roles(plan) == ["system", "system", "user", "assistant", "tool", "user"]
    assert "Checking." in plan.messages[3].text and "hmm" not in plan.messages[3].text
    assert "hot" in plan.messages[4].text and "image omitted" in plan.messages[4].text
    assert plan.tool_choice == "required" and [t.name for t in plan.tools] == ["get_weather"]
    assert plan.stop == ["\n\nHuman:"] and plan.affinity_source == "user:u-1"
    assert plan.call_id_prefix == "toolu_"


def test_anthropic_image_without_source_is_400() -> None:
    with pytest.raises(ApiError, match="needs a base64 or url source"):
        anthropic({"messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}]})
