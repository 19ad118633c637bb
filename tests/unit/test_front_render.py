"""Renderers: every streamed event and every body validates against the official SDKs' types."""

from __future__ import annotations

import json
from typing import Any

import anthropic.types as at
import openai.types.chat as oc
import openai.types.responses as orr
import pytest
from pydantic import TypeAdapter

from front.anthropic_stream import AnthropicStreamRenderer, messages_body
from front.errors import ApiError, ApiFlavor, ErrorKind
from front.openai_chat_stream import ChatStreamRenderer, chat_body
from front.openai_responses_stream import ResponsesStreamRenderer
from front.pipeline import Collected, Outcome
from front.plan import ChatPlan
from protocol.chat import Message, ToolCall

pytestmark = pytest.mark.unit

CALL = ToolCall(id=0, call_id="call_abc", name="get_weather", arguments_json='{"city":"Paris"}')
DONE = Outcome(
    finish_reason="tool_calls",
    prompt_tokens=5,
    completion_tokens=7,
    served_by="acct-a",
    first_token_ms=12.0,
    total_ms=40.0,
)


RESPONSE_EVENTS: TypeAdapter[Any] = TypeAdapter(orr.ResponseStreamEvent)
ANTHROPIC_EVENTS: TypeAdapter[Any] = TypeAdapter(at.RawMessageStreamEvent)


def sse(raw: bytes) -> list[tuple[str, str]]:
    """(event name, data) pairs; checks the framing on the way."""
    events = []
    text = raw.decode()
    assert text.endswith("\n\n")
    for block in text.split("\n\n")[:-1]:
        name, data = "", ""
        for line in block.split("\n"):
            field, _, value = line.partition(": ")
            if field == "event":
                name = value
            else:
                assert field == "data", line
                data = value
        events.append((name, data))
    return events


def everything(renderer: Any, outcome: Outcome = DONE) -> bytes:
    out: bytes = (
        renderer.open()
        + renderer.reasoning("thinking...")
        + renderer.text("Hel")
        + renderer.text('lo "quoted" 北京')
        + renderer.tool_call(CALL)
        + renderer.close(outcome)
    )
    return out


def test_chat_chunks_validate() -> None:
    raw = everything(ChatStreamRenderer("chatcmpl-1", 1, "qwen", include_usage=True))
    events = sse(raw)
    assert events[-1] == ("", "[DONE]")
    chunks = [oc.ChatCompletionChunk.model_validate(json.loads(d)) for _, d in events[:-1]]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == 'Hello "quoted" 北京'
    calls = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
    assert calls[0].function is not None and calls[0].function.name == "get_weather"
    assert calls[0].index == 0 and calls[0].id == "call_abc"
    assert chunks[-2].choices[0].finish_reason == "tool_calls"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 12


def test_chat_stream_error_is_an_error_object() -> None:
    renderer = ChatStreamRenderer("chatcmpl-1", 1, "qwen", include_usage=False)
    events = sse(renderer.error(ApiError(ErrorKind.UPSTREAM, "boom")))
    assert json.loads(events[0][1])["error"]["message"] == "boom"


def plan() -> ChatPlan:
    return ChatPlan(api=ApiFlavor.OPENAI, model="qwen", messages=[Message(role="user", text="hi")])


def test_chat_body_validates() -> None:
    result = Collected(text=["Hi"], reasoning=["r"], calls=[CALL], outcome=DONE)
    body = chat_body(plan(), result, "chatcmpl-1", 1)
    parsed = oc.ChatCompletion.model_validate(body)
    assert parsed.choices[0].message.tool_calls is not None
    assert body["served_by"] == "acct-a" and body["latency"]["first_token_ms"] == 12.0
    assert body["usage"]["total_tokens"] == 12


def test_responses_events_validate() -> None:
    adapter = RESPONSE_EVENTS
    renderer = ResponsesStreamRenderer(
        "resp_1", 1, "qwen", {"tools": [], "tool_choice": "auto", "parallel_tool_calls": True}
    )
    events = sse(everything(renderer, Outcome(finish_reason="stop", prompt_tokens=1)))
    parsed = [adapter.validate_python(json.loads(d)) for _, d in events]
    assert [name for name, _ in events] == [p.type for p in parsed]
    assert [p.sequence_number for p in parsed] == list(range(len(parsed)))
    final = parsed[-1]
    assert final.type == "response.completed"
    assert final.response.output_text == 'Hello "quoted" 北京'
    kinds = [item.type for item in final.response.output]
    assert kinds == ["reasoning", "message", "function_call"]


def test_responses_failure_event() -> None:
    adapter = RESPONSE_EVENTS
    renderer = ResponsesStreamRenderer(
        "resp_1", 1, "qwen", {"tools": [], "tool_choice": "auto", "parallel_tool_calls": True}
    )
    raw = (
        renderer.open() + renderer.text("x") + renderer.error(ApiError(ErrorKind.UPSTREAM, "lost"))
    )
    last = adapter.validate_python(json.loads(sse(raw)[-1][1]))
    assert last.type == "response.failed" and last.response.error.message == "lost"


def test_anthropic_events_validate() -> None:
    adapter = ANTHROPIC_EVENTS
    events = sse(everything(AnthropicStreamRenderer("msg_1", "qwen", 5)))
    parsed = [adapter.validate_python(json.loads(d)) for name, d in events if name != "ping"]
    assert [e.type for e in parsed][:2] == ["message_start", "content_block_start"]
    starts = [e.content_block.type for e in parsed if e.type == "content_block_start"]
    assert starts == ["thinking", "text", "tool_use"]
    delta = next(e for e in parsed if e.type == "message_delta")
    assert delta.delta.stop_reason == "tool_use" and delta.usage.output_tokens == 7
    assert parsed[-1].type == "message_stop"
    # every block index opened is closed, in order
    stops = [e.index for e in parsed if e.type == "content_block_stop"]
    assert stops == [0, 1, 2]


def test_anthropic_body_validates() -> None:
    result = Collected(text=["Hi"], calls=[CALL], outcome=DONE)
    message = at.Message.model_validate(messages_body("msg_1", "qwen", result))
    assert message.stop_reason == "tool_use"
    assert [b.type for b in message.content] == ["text", "tool_use"]
    assert message.content[1].input == {"city": "Paris"}  # type: ignore[union-attr]


def test_anthropic_stop_sequence_reason() -> None:
    outcome = Outcome(finish_reason="stop_sequence", stop_sequence="END")
    message = at.Message.model_validate(
        messages_body("msg_1", "qwen", Collected(text=["a"], outcome=outcome))
    )
    assert message.stop_reason == "stop_sequence" and message.stop_sequence == "END"


def test_a_content_filter_end_is_named_in_each_api() -> None:
    """The runtime's `chat/answer.isFiltered` (lingma-protocol.md §5.3) as each API says it."""
    filtered = Outcome(finish_reason="content_filter")
    chat = oc.ChatCompletion.model_validate(
        chat_body(plan(), Collected(text=["x"], outcome=filtered), "chatcmpl-1", 1)
    )
    assert chat.choices[0].finish_reason == "content_filter"
    message = at.Message.model_validate(
        messages_body("msg_1", "qwen", Collected(text=["x"], outcome=filtered))
    )
    assert message.stop_reason == "refusal"
    extras = {"tools": [], "tool_choice": "auto", "parallel_tool_calls": True}
    renderer = ResponsesStreamRenderer("resp_1", 1, "qwen", extras)
    events = [
        RESPONSE_EVENTS.validate_json(data) for _, data in sse(everything(renderer, filtered))
    ]
    assert events[-1].type == "response.incomplete"
    final = events[-1].response
    assert final.status == "incomplete" and final.incomplete_details is not None
    assert final.incomplete_details.reason == "content_filter"
