"""Unit: the tolerant cloud SSE decoder (§14.8) and native tool-call assembly."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from worker.cloud.calls import ToolCallAssembler, arguments_object
from worker.cloud.sse import (
    CloudEvent,
    DoneSeen,
    FinishSeen,
    InBandError,
    ReasoningPiece,
    SseDecoder,
    StreamError,
    TextPiece,
    ToolFragment,
    UsageSeen,
)

pytestmark = pytest.mark.unit

_json = msgspec.json.Encoder().encode


def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        **extra,
    }


def envelope(body: str, status: int = 200, name: str = "OK") -> bytes:
    wrapped = {"headers": {"Content-Type": ["application/json"]}, "body": body}
    return _json({**wrapped, "statusCodeValue": status, "statusCode": name})


def wrapped(payload: dict[str, Any]) -> bytes:
    return envelope(_json(payload).decode())


def decode(data: bytes, step: int = 0) -> list[CloudEvent]:
    decoder = SseDecoder()
    if not step:
        return decoder.feed(data) + decoder.close()
    events: list[CloudEvent] = []
    for start in range(0, len(data), step):
        events += decoder.feed(data[start : start + step])
    return events + decoder.close()


NORMAL = (
    b"data:" + wrapped(chunk({"role": "assistant", "content": "Hel"})) + b"\n\n"
    b"data:" + wrapped(chunk({"content": "lo"})) + b"\n\n"
    b"data:" + wrapped(chunk({}, "stop", usage={"prompt_tokens": 12, "completion_tokens": 2}))
    + b"\n\ndata:[DONE]\n\n"
)  # fmt: skip
EXPECTED = [
    TextPiece("Hel"),
    TextPiece("lo"),
    FinishSeen("stop"),
    UsageSeen(12, 2),
    DoneSeen(),
]


@pytest.mark.parametrize("step", [0, 1, 7, 64])
def test_the_spec_example_in_any_read_sizes(step: int) -> None:
    assert decode(NORMAL, step) == EXPECTED


def test_variants_space_done_envelope_crlf_comments_bare_chunks() -> None:
    stream = (
        b": keep-alive\r\nevent: message\r\nid: 1\r\n\r\n"
        b"data: " + _json(chunk({"content": "Hi"})) + b"\r\n\r\n"
        b"data: " + wrapped(chunk({"reasoning_content": "think"})) + b"\r\n\r\n"
        b"data: " + envelope("") + b"\n\n"
        b"data: " + envelope("[DONE]") + b"\n\n"
    )  # fmt: skip
    assert decode(stream) == [TextPiece("Hi"), ReasoningPiece("think"), DoneSeen()]


def test_tap_statistics_line_and_usage_aliases() -> None:
    stats = {
        "firstTokenDuration": 1,
        "totalDuration": 9,
        "usage": {"input_tokens": 5, "output_tokens": 3},
    }
    stream = b"data:" + wrapped(chunk({}, "stop")) + b"\n\ndata:" + _json(stats) + b"\n\n"
    assert decode(stream) == [FinishSeen("stop"), UsageSeen(5, 3)]


def test_in_band_errors_with_value_or_only_a_spring_name() -> None:
    body = '{"code":"429","message":"Too many requests"}'
    stream = b"data:" + envelope(body, 429, "TOO_MANY_REQUESTS") + b"\n\n"
    assert decode(stream) == [InBandError(429, "429", "Too many requests")]
    named = _json(
        {"body": '{"code":"101","message":"Signature invalid"}', "statusCode": "FORBIDDEN"}
    )
    assert decode(b"data:" + named + b"\n\n") == [InBandError(403, "101", "Signature invalid")]
    assert decode(b'data:{"error":{"code":"x","message":"boom"}}\n\n')[0] == InBandError(
        500, "x", "boom"
    )


def test_long_lines_and_multi_line_data() -> None:
    text = "x" * (3 * 1024 * 1024)
    assert decode(b"data:" + wrapped(chunk({"content": text})) + b"\n\n") == [TextPiece(text)]
    payload = _json(chunk({"content": "split"}))
    half = len(payload) // 2
    stream = b"data:" + payload[:half] + b"\ndata:" + payload[half:] + b"\n\n"
    assert decode(stream) == [TextPiece("split")]
    with pytest.raises(StreamError):
        SseDecoder(max_line=100).feed(b"data:" + b"y" * 200)


def test_tool_fragments_by_index_with_a_late_id() -> None:
    fragments = [
        {"index": 0, "type": "function", "function": {"name": "get_weather", "arguments": ""}},
        {"index": 0, "id": "call_7"},
        {"index": 1, "id": "call_8", "function": {"name": "get_time", "arguments": ""}},
        {"index": 0, "function": {"arguments": '{"city":'}},
        {"index": 1, "function": {"arguments": "{}"}},
        {"index": 0, "function": {"arguments": '"Paris"}'}},
    ]
    stream = (
        b"".join(b"data:" + wrapped(chunk({"tool_calls": [f]})) + b"\n\n" for f in fragments)
        + b"data:"
        + wrapped(chunk({}, "tool_calls"))
        + b"\n\n"
    )
    events = decode(stream)
    assembler = ToolCallAssembler()
    for event in events:
        if isinstance(event, ToolFragment):
            assembler.add(event)
    calls = assembler.calls()
    assert [(c.call_id, c.name, c.arguments_json) for c in calls] == [
        ("call_7", "get_weather", '{"city":"Paris"}'),
        ("call_8", "get_time", "{}"),
    ]
    assert events[-1] == FinishSeen("tool_calls")


def test_assembler_without_index_or_id_and_raw_arguments() -> None:
    assembler = ToolCallAssembler()
    assembler.add(ToolFragment(None, "", "lookup", ""))
    assembler.add(ToolFragment(None, "", "", "not json"))
    assembler.add(ToolFragment(None, "", "", ""))
    (call,) = assembler.calls()
    assert call.name == "lookup" and call.call_id.startswith("call_")
    assert msgspec.json.decode(call.arguments_json) == {"raw_arguments": "not json"}
    assert arguments_object("") == "{}" and arguments_object("[1]") == '{"raw_arguments":"[1]"}'
