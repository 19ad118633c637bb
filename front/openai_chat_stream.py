"""Runs in the front: OpenAI chat output — chat.completion.chunk SSE and the chat.completion body.

The stream opens with the assistant role, carries text, reasoning (`reasoning_content`) and
tool-call chunks, and ends with the finish reason, `served_by` and `latency`, the usage chunk
when `stream_options.include_usage` asked for it, and `[DONE]`. Failures after the first byte:
one error chunk, then `[DONE]`.
"""

from __future__ import annotations

from typing import Any

from front.errors import ApiError, openai_error_payload
from front.pipeline import Collected, Outcome
from front.plan import ChatPlan
from front.sse import DONE, StreamRenderer, data_line, json_encode, open_object
from protocol.chat import ToolCall

OPENAI_FINISH = {"stop_sequence": "stop"}


def _usage(outcome: Outcome) -> dict[str, int]:
    return {
        "prompt_tokens": outcome.prompt_tokens,
        "completion_tokens": outcome.completion_tokens,
        "total_tokens": outcome.total_tokens,
    }


def _latency(outcome: Outcome) -> dict[str, Any]:
    return {"first_token_ms": outcome.first_token_ms, "total_ms": outcome.total_ms}


def _tool_call_json(call: ToolCall) -> dict[str, Any]:
    return {
        "id": call.call_id,
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments_json},
    }


class ChatStreamRenderer(StreamRenderer):
    """chat.completion.chunk SSE; the envelope is encoded once, each text chunk appends to it."""

    __slots__ = ("_envelope", "_head", "_include_usage", "_text_head", "_text_tail", "_tool_index")

    def __init__(self, completion_id: str, created: int, model: str, include_usage: bool) -> None:
        envelope = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
        }
        self._envelope = envelope
        self._head = b"data: " + open_object(envelope) + b',"choices":[{"index":0,"delta":'
        self._text_head = self._head + b'{"content":'
        self._text_tail = b'},"finish_reason":null}]}\n\n'
        self._include_usage = include_usage
        self._tool_index = 0

    def _chunk(self, delta: dict[str, Any]) -> bytes:
        return self._head + json_encode(delta) + b',"finish_reason":null}]}\n\n'

    def open(self) -> bytes:
        return self._chunk({"role": "assistant", "content": ""})

    def text(self, text: str) -> bytes:
        return self._text_head + json_encode(text) + self._text_tail

    def reasoning(self, text: str) -> bytes:
        return self._chunk({"reasoning_content": text})

    def tool_call(self, call: ToolCall) -> bytes:
        index, self._tool_index = self._tool_index, self._tool_index + 1
        return self._chunk({"tool_calls": [{"index": index, **_tool_call_json(call)}]})

    def close(self, outcome: Outcome) -> bytes:
        reason = OPENAI_FINISH.get(outcome.finish_reason, outcome.finish_reason)
        final = {
            **self._envelope,
            "choices": [{"index": 0, "delta": {}, "finish_reason": reason}],
            "served_by": outcome.served_by,
            "latency": _latency(outcome),
        }
        out = data_line(final)
        if self._include_usage:
            out += data_line({**self._envelope, "choices": [], "usage": _usage(outcome)})
        return out + DONE

    def error(self, err: ApiError) -> bytes:
        return data_line(openai_error_payload(err)) + DONE


def chat_body(
    plan: ChatPlan, result: Collected, completion_id: str, created: int
) -> dict[str, Any]:
    outcome = result.outcome or Outcome(finish_reason="stop")
    text = "".join(result.text)
    message: dict[str, Any] = {
        "role": "assistant",
        "content": text or (None if result.calls else ""),
    }
    if result.calls:
        message["tool_calls"] = [_tool_call_json(c) for c in result.calls]
    if result.reasoning:
        message["reasoning_content"] = "".join(result.reasoning)
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": plan.model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": OPENAI_FINISH.get(outcome.finish_reason, outcome.finish_reason),
                "logprobs": None,
            }
        ],
        "usage": _usage(outcome),
        "served_by": outcome.served_by,
        "latency": _latency(outcome),
    }
