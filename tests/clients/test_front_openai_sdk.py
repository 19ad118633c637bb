"""The official openai SDK against the gateway: chat, Responses, tools, usage, errors."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from tests.clients.conftest import BACKENDS, is_cloud
from tests.harness import DirectGateway

# Every test runs against a runtime-backend and a cloud-backend gateway.
pytestmark = [pytest.mark.clients, pytest.mark.parametrize("gw", BACKENDS, indirect=True)]

WEATHER_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
TOOL_RULES: list[dict[str, Any]] = [
    {"match": "Tool result", "reply": "It is sunny in Paris."},
    {
        "match": "weather",
        "reply": "Let me look that up.",
        "tool_call": {"name": "get_weather", "arguments": {"city": "Paris"}},
    },
]


def test_models_list_has_workers_models_and_aliases(gw: DirectGateway, oai: openai.OpenAI) -> None:
    models = {m.id: m for m in oai.models.list()}
    auto = "org_auto" if is_cloud(gw) else "auto"  # the cloud's list names its automatic key so
    assert auto in models and "house-model" in models
    extra = models[auto].model_extra
    assert extra is not None and extra["name"] == "Auto"


def test_chat_non_streaming(oai: openai.OpenAI) -> None:
    reply = oai.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "hi there"}], temperature=0.1, user="u1"
    )
    assert "You said: hi there" in (reply.choices[0].message.content or "")
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None and reply.usage.completion_tokens > 0
    extra = reply.model_extra or {}
    assert extra["served_by"] in ("acct-0", "acct-1") and extra["latency"]["total_ms"] > 0


def test_chat_streaming_with_usage(oai: openai.OpenAI) -> None:
    stream = oai.chat.completions.create(
        model="auto",
        messages=[{"role": "user", "content": "stream me"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "You said: stream me" in text
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"


def test_chat_tool_call_round_trip(gw: DirectGateway, oai: openai.OpenAI) -> None:
    gw.set_script(TOOL_RULES)
    messages: list[Any] = [{"role": "user", "content": "What's the weather in Paris?"}]
    first = oai.chat.completions.create(model="auto", messages=messages, tools=[WEATHER_TOOL])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls or []
    assert call.type == "function"
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {
        "city": "Paris"
    }
    messages += [
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": '{"sky": "clear"}'},
    ]
    second = oai.chat.completions.create(model="auto", messages=messages, tools=[WEATHER_TOOL])
    assert second.choices[0].message.content == "It is sunny in Paris."
    assert second.choices[0].finish_reason == "stop"


def test_chat_tool_call_streamed(gw: DirectGateway, oai: openai.OpenAI) -> None:
    gw.set_script(TOOL_RULES)
    stream = oai.chat.completions.create(
        model="auto",
        messages=[{"role": "user", "content": "weather please"}],
        tools=[WEATHER_TOOL],
        stream=True,
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    calls = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
    assert text == "Let me look that up."
    assert (
        len(calls) == 1
        and calls[0].function is not None
        and calls[0].function.name == "get_weather"
    )
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_responses_non_streaming_and_streaming(oai: openai.OpenAI) -> None:
    response = oai.responses.create(model="auto", input="hello responses", instructions="Be brief.")
    assert "You said: hello responses" in response.output_text
    assert response.status == "completed" and response.usage is not None
    with oai.responses.stream(model="auto", input="stream responses") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "You said: stream responses" in "".join(deltas) == final.output_text


def test_responses_function_call_round_trip(gw: DirectGateway, oai: openai.OpenAI) -> None:
    gw.set_script(TOOL_RULES)
    tool: Any = {
        "type": "function",
        "name": "get_weather",
        "description": "weather",
        "parameters": {"type": "object", "properties": {}},
    }
    first = oai.responses.create(model="auto", input="weather in Paris?", tools=[tool])
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1 and json.loads(calls[0].arguments) == {"city": "Paris"}
    follow_up: Any = [
        {"role": "user", "content": "weather in Paris?"},
        {
            "type": "function_call",
            "call_id": calls[0].call_id,
            "name": "get_weather",
            "arguments": calls[0].arguments,
        },
        {"type": "function_call_output", "call_id": calls[0].call_id, "output": "clear"},
    ]
    with oai.responses.stream(model="auto", input=follow_up, tools=[tool]) as stream:
        final = stream.get_final_response()
    assert final.output_text == "It is sunny in Paris."


def test_responses_streamed_function_call_events(gw: DirectGateway, oai: openai.OpenAI) -> None:
    gw.set_script(TOOL_RULES)
    tool: Any = {
        "type": "function",
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {}},
    }
    events = list(
        oai.responses.create(model="auto", input="weather now", tools=[tool], stream=True)
    )
    kinds = [getattr(e, "type", "") for e in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert (
        "response.function_call_arguments.delta" in kinds
        and "response.function_call_arguments.done" in kinds
    )


def test_bad_key_is_401(gw: DirectGateway) -> None:
    client = openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 401 and "invalid API key" in str(info.value)


def test_bad_body_is_400(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        oai.chat.completions.create(model="auto", messages=[{"role": "user", "content": "x"}], n=3)
    assert "n > 1" in str(info.value)
    with pytest.raises(openai.BadRequestError):
        not_a_list: Any = "not a list"
        oai.chat.completions.create(model="auto", messages=not_a_list)


def test_unknown_model_is_404(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        oai.chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "x"}]
        )
    assert info.value.code == "model_not_found"


def test_upstream_error_mid_stream_raises(gw: DirectGateway, oai: openai.OpenAI) -> None:
    gw.set_script(
        [
            {
                "match": "explode",
                "reply": "partial answer",
                "error": {"status": 500, "message": "boom"},
            }
        ]
    )
    stream = oai.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "explode"}], stream=True
    )
    received: list[str] = []
    with pytest.raises(openai.APIError) as info:
        for chunk in stream:
            received.append(chunk.choices[0].delta.content or "" if chunk.choices else "")
    assert "partial answer" in "".join(received)  # the error came in-band, after the first bytes
    assert not isinstance(info.value, openai.APIStatusError)
