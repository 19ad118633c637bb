"""Runs in the front: OpenAI Responses output — the event stream and the `response` object.

Output items open and close as the reply changes kind (reasoning → message text → function
calls); each event carries `type` and a `sequence_number`, as the SDKs expect. Every
`response` object echoes the request's settings (`envelope_extras`).
"""

from __future__ import annotations

import secrets
from typing import Any

from front.errors import ApiError
from front.pipeline import Collected, Outcome
from front.plan import ChatPlan
from front.schemas_openai import ResponsesBody
from front.sse import StreamRenderer, json_encode, named_event
from protocol.chat import ToolCall


def message_item(item_id: str, text: str, status: str) -> dict[str, Any]:
    content = [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]
    return {
        "type": "message",
        "id": item_id,
        "status": status,
        "role": "assistant",
        "content": content if status == "completed" else [],
    }


def reasoning_item(item_id: str, text: str) -> dict[str, Any]:
    return {
        "type": "reasoning",
        "id": item_id,
        "summary": [],
        "content": [{"type": "reasoning_text", "text": text}] if text else [],
    }


def function_call_item(item_id: str, call: ToolCall, status: str) -> dict[str, Any]:
    arguments = call.arguments_json if status == "completed" else ""
    return {
        "type": "function_call",
        "id": item_id,
        "call_id": call.call_id,
        "name": call.name,
        "arguments": arguments,
        "status": status,
    }


def usage_json(outcome: Outcome) -> dict[str, Any]:
    return {
        "input_tokens": outcome.prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": outcome.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": outcome.total_tokens,
    }


def _error_json(error: ApiError) -> dict[str, Any]:
    # The Responses API allows only a fixed set of codes; ours goes in `type`.
    code = "rate_limit_exceeded" if error.status == 429 else "server_error"
    return {"code": code, "message": error.message, "type": error.kind.value[2], "param": None}


class ResponsesStreamRenderer(StreamRenderer):
    __slots__ = (
        "_created",
        "_delta_head",
        "_extras",
        "_id",
        "_model",
        "_open_id",
        "_open_kind",
        "_open_text",
        "_output",
        "_seq",
    )

    def __init__(self, response_id: str, created: int, model: str, extras: dict[str, Any]) -> None:
        self._id = response_id
        self._created = created
        self._model = model
        self._extras = extras
        self._seq = 0
        self._output: list[dict[str, Any]] = []
        self._open_kind = ""  # "" | "message" | "reasoning"
        self._open_id = ""
        self._open_text: list[str] = []
        self._delta_head = b""

    # ------------------------------------------------------------------ response object

    def response(
        self, outcome: Outcome | None, output: list[dict[str, Any]], error: ApiError | None = None
    ) -> dict[str, Any]:
        status = "in_progress"
        incomplete = None
        if error is not None:
            status = "failed"
        elif outcome is not None:
            status = "completed"
            if outcome.finish_reason == "length":
                status, incomplete = "incomplete", {"reason": "max_output_tokens"}
            elif outcome.finish_reason == "content_filter":
                status, incomplete = "incomplete", {"reason": "content_filter"}
        body: dict[str, Any] = {
            "id": self._id,
            "object": "response",
            "created_at": self._created,
            "status": status,
            "model": self._model,
            "output": output,
            "error": _error_json(error) if error else None,
            "incomplete_details": incomplete,
            "usage": usage_json(outcome) if outcome else None,
            **self._extras,
        }
        if outcome is not None:
            body["served_by"] = outcome.served_by
            body["latency"] = {
                "first_token_ms": outcome.first_token_ms,
                "total_ms": outcome.total_ms,
            }
        return body

    # ------------------------------------------------------------------ events

    def _event(self, kind: str, payload: dict[str, Any]) -> bytes:
        self._seq += 1
        return named_event(kind, {"type": kind, **payload, "sequence_number": self._seq - 1})

    def open(self) -> bytes:
        snapshot = self.response(None, [])
        return self._event("response.created", {"response": snapshot}) + self._event(
            "response.in_progress", {"response": snapshot}
        )

    def text(self, text: str) -> bytes:
        return self._delta("message", text)

    def reasoning(self, text: str) -> bytes:
        return self._delta("reasoning", text)

    def _delta(self, kind: str, text: str) -> bytes:
        """One delta of the open `kind` item (opening it first if another kind is open)."""
        out = b"" if self._open_kind == kind else self._start(kind)
        self._open_text.append(text)
        self._seq += 1
        return (
            out
            + self._delta_head
            + json_encode(text)
            + b',"sequence_number":'
            + str(self._seq - 1).encode()
            + b"}\n\n"
        )

    def tool_call(self, call: ToolCall) -> bytes:
        out = self._finish_open()
        index, item_id = len(self._output), f"fc_{secrets.token_hex(12)}"
        where = {"item_id": item_id, "output_index": index}
        out += self._event(
            "response.output_item.added",
            {"output_index": index, "item": function_call_item(item_id, call, "in_progress")},
        )
        out += self._event(
            "response.function_call_arguments.delta", {**where, "delta": call.arguments_json}
        )
        out += self._event(
            "response.function_call_arguments.done",
            {**where, "name": call.name, "arguments": call.arguments_json},
        )
        done = function_call_item(item_id, call, "completed")
        self._output.append(done)
        return out + self._event("response.output_item.done", {"output_index": index, "item": done})

    def close(self, outcome: Outcome) -> bytes:
        out = self._finish_open()
        body = self.response(outcome, self._output)
        kind = "response.incomplete" if body["status"] == "incomplete" else "response.completed"
        return out + self._event(kind, {"response": body})

    def error(self, err: ApiError) -> bytes:
        out = self._finish_open()
        return out + self._event(
            "response.failed", {"response": self.response(None, self._output, err)}
        )

    # ------------------------------------------------------------------ item lifecycle

    def _start(self, kind: str) -> bytes:
        out = self._finish_open()
        index = len(self._output)
        prefix = "msg" if kind == "message" else "rs"
        self._open_kind, self._open_id, self._open_text = (
            kind,
            f"{prefix}_{secrets.token_hex(12)}",
            [],
        )
        where = {"item_id": self._open_id, "output_index": index, "content_index": 0}
        if kind == "message":
            item = message_item(self._open_id, "", "in_progress")
            out += self._event("response.output_item.added", {"output_index": index, "item": item})
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            out += self._event("response.content_part.added", {**where, "part": part})
            delta_kind = "response.output_text.delta"
            head = {"type": delta_kind, **where, "logprobs": []}
        else:
            item = reasoning_item(self._open_id, "")
            out += self._event("response.output_item.added", {"output_index": index, "item": item})
            delta_kind = "response.reasoning_text.delta"
            head = {"type": delta_kind, **where}
        self._delta_head = (
            b"event: " + delta_kind.encode() + b"\ndata: " + json_encode(head)[:-1] + b',"delta":'
        )
        return out

    def _finish_open(self) -> bytes:
        if not self._open_kind:
            return b""
        index, text = len(self._output), "".join(self._open_text)
        where = {"item_id": self._open_id, "output_index": index, "content_index": 0}
        if self._open_kind == "message":
            part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
            out = self._event("response.output_text.done", {**where, "text": text, "logprobs": []})
            out += self._event("response.content_part.done", {**where, "part": part})
            item = message_item(self._open_id, text, "completed")
        else:
            out = self._event("response.reasoning_text.done", {**where, "text": text})
            item = reasoning_item(self._open_id, text)
        self._output.append(item)
        self._open_kind, self._open_text = "", []
        return out + self._event("response.output_item.done", {"output_index": index, "item": item})


def response_body(
    plan: ChatPlan, body: ResponsesBody, response_id: str, created: int, result: Collected
) -> dict[str, Any]:
    outcome = result.outcome or Outcome(finish_reason="stop")
    output: list[dict[str, Any]] = []
    if result.reasoning:
        output.append(reasoning_item(f"rs_{secrets.token_hex(12)}", "".join(result.reasoning)))
    if result.text:
        output.append(
            message_item(f"msg_{secrets.token_hex(12)}", "".join(result.text), "completed")
        )
    output += [
        function_call_item(f"fc_{secrets.token_hex(12)}", c, "completed") for c in result.calls
    ]
    renderer = ResponsesStreamRenderer(
        response_id, created, plan.model, envelope_extras(plan, body)
    )
    return renderer.response(outcome, output)


def envelope_extras(plan: ChatPlan, body: ResponsesBody) -> dict[str, Any]:
    """Request-echo fields every `response` object carries."""
    choice: Any = plan.tool_choice
    if plan.forced_tool:
        choice = {"type": "function", "name": plan.forced_tool}
    return {
        "instructions": body.instructions,
        "max_output_tokens": body.max_output_tokens,
        "parallel_tool_calls": body.parallel_tool_calls
        if body.parallel_tool_calls is not None
        else True,
        "previous_response_id": None,
        "temperature": body.temperature,
        "top_p": body.top_p,
        "tool_choice": choice,
        "tools": [
            {
                "type": "function",
                "name": t.name,
                "description": t.description,
                "parameters": None,
                "strict": None,
            }
            for t in plan.tools
        ],
        "metadata": body.metadata or {},
        "user": body.user,
        "store": False,
        "text": {"format": {"type": "text"}},
        "truncation": "disabled",
        "reasoning": {"effort": None, "summary": None},
    }
