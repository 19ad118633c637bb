"""Runs in the front: Anthropic Messages output — the named-event SSE stream and the JSON body.

Stream order, as the Anthropic SDKs expect: message_start, ping, then per content block
content_block_start / *_delta / content_block_stop (thinking, text, tool_use), message_delta
with stop_reason and usage, message_stop. Failures after the first byte: an `error` event.
"""

from __future__ import annotations

from typing import Any

import msgspec

from front.errors import ApiError, anthropic_error_payload
from front.pipeline import Collected, Outcome
from front.sse import StreamRenderer, json_encode, named_event
from protocol.chat import ToolCall

STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "stop_sequence": "stop_sequence",
    "content_filter": "refusal",
}


def tool_input(call: ToolCall) -> dict[str, Any]:
    try:
        value = msgspec.json.decode(call.arguments_json)
    except msgspec.DecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def message_envelope(message_id: str, model: str) -> dict[str, Any]:
    return {"id": message_id, "type": "message", "role": "assistant", "model": model}


class AnthropicStreamRenderer(StreamRenderer):
    __slots__ = (
        "_delta_head",
        "_delta_tail",
        "_envelope",
        "_index",
        "_open_kind",
        "_prompt_tokens",
    )

    def __init__(self, message_id: str, model: str, prompt_tokens: int) -> None:
        self._envelope = message_envelope(message_id, model)
        self._prompt_tokens = prompt_tokens
        self._index = -1
        self._open_kind = ""  # "" | "text" | "thinking"
        self._delta_head = b""
        self._delta_tail = b"}}\n\n"

    def open(self) -> bytes:
        message = {
            **self._envelope,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": self._prompt_tokens, "output_tokens": 0},
        }
        return named_event(
            "message_start", {"type": "message_start", "message": message}
        ) + named_event("ping", {"type": "ping"})

    def text(self, text: str) -> bytes:
        out = (
            b""
            if self._open_kind == "text"
            else self._start("text", {"type": "text", "text": ""}, "text_delta", "text")
        )
        return out + self._delta_head + json_encode(text) + self._delta_tail

    def reasoning(self, text: str) -> bytes:
        out = b""
        if self._open_kind != "thinking":
            block = {"type": "thinking", "thinking": "", "signature": ""}
            out = self._start("thinking", block, "thinking_delta", "thinking")
        return out + self._delta_head + json_encode(text) + self._delta_tail

    def tool_call(self, call: ToolCall) -> bytes:
        out = self._stop_open()
        self._index += 1
        block = {"type": "tool_use", "id": call.call_id, "name": call.name, "input": {}}
        delta = {"type": "input_json_delta", "partial_json": call.arguments_json}
        out += named_event(
            "content_block_start",
            {"type": "content_block_start", "index": self._index, "content_block": block},
        )
        out += named_event(
            "content_block_delta",
            {"type": "content_block_delta", "index": self._index, "delta": delta},
        )
        return out + named_event(
            "content_block_stop", {"type": "content_block_stop", "index": self._index}
        )

    def close(self, outcome: Outcome) -> bytes:
        out = self._stop_open()
        delta = {
            "stop_reason": STOP_REASONS.get(outcome.finish_reason, "end_turn"),
            "stop_sequence": outcome.stop_sequence,
        }
        usage = {"input_tokens": outcome.prompt_tokens, "output_tokens": outcome.completion_tokens}
        out += named_event(
            "message_delta", {"type": "message_delta", "delta": delta, "usage": usage}
        )
        return out + named_event("message_stop", {"type": "message_stop"})

    def error(self, err: ApiError) -> bytes:
        return named_event("error", anthropic_error_payload(err))

    def _start(self, kind: str, block: dict[str, Any], delta_type: str, field: str) -> bytes:
        out = self._stop_open()
        self._index += 1
        self._open_kind = kind
        head = {"type": "content_block_delta", "index": self._index, "delta": {"type": delta_type}}
        # '{"type":..,"index":N,"delta":{"type":"text_delta"' + ',"text":' ... + '}}'
        self._delta_head = (
            b"event: content_block_delta\ndata: "
            + json_encode(head)[:-2]
            + b',"'
            + field.encode()
            + b'":'
        )
        return out + named_event(
            "content_block_start",
            {"type": "content_block_start", "index": self._index, "content_block": block},
        )

    def _stop_open(self) -> bytes:
        if not self._open_kind:
            return b""
        self._open_kind = ""
        return named_event(
            "content_block_stop", {"type": "content_block_stop", "index": self._index}
        )


def messages_body(message_id: str, model: str, result: Collected) -> dict[str, Any]:
    outcome = result.outcome or Outcome(finish_reason="stop")
    content: list[dict[str, Any]] = []
    if result.reasoning:
        content.append({"type": "thinking", "thinking": "".join(result.reasoning), "signature": ""})
    if result.text:
        content.append({"type": "text", "text": "".join(result.text)})
    content += [
        {"type": "tool_use", "id": call.call_id, "name": call.name, "input": tool_input(call)}
        for call in result.calls
    ]
    return {
        **message_envelope(message_id, model),
        "content": content,
        "stop_reason": STOP_REASONS.get(outcome.finish_reason, "end_turn"),
        "stop_sequence": outcome.stop_sequence,
        "usage": {
            "input_tokens": outcome.prompt_tokens,
            "output_tokens": outcome.completion_tokens,
        },
        "served_by": outcome.served_by,
        "latency": {"first_token_ms": outcome.first_token_ms, "total_ms": outcome.total_ms},
    }
