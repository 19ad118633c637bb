"""Runs in the front: POST /v1/chat/completions — OpenAI chat in, chat.completion(.chunk) out.

Translation (body → ChatPlan) and rendering (events → chunks / one body) are pure functions
and classes here; the handler at the bottom only wires them to auth and the relay. Images
(`image_url` parts) travel with their user message in both forms: runtime workers pass them
as ACP image prompt items, cloud workers upload them.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from aiohttp import web

from front.errors import ApiError, ApiFlavor, openai_error_payload
from front.httpkit import admit_chat, json_response
from front.images import ImageCounter, from_url
from front.pipeline import Outcome
from front.plan import (
    ChatPlan,
    bad_request,
    check_max_tokens,
    check_tool_choice,
    first_texts,
    normalize_stop,
    with_tool_instructions,
)
from front.relay import Collected, collect, stream_response
from front.routing import affinity_source
from front.schemas_openai import ChatCompletionsBody, ChatMessageIn, Content, FunctionDef
from front.sse import DONE, StreamRenderer, data_line, json_encode, open_object
from front.tools import (
    ParsedCall,
    arguments_from_json,
    render_assistant_turn,
    render_tool_result,
)
from front.turns import prior_call, require_content, user_turn
from protocol.chat import ChatTurn, ImageInput, Message, ToolCall, ToolSpec

TEXT_PART_TYPES = frozenset({"text", "input_text", "output_text"})
IMAGE_PART_TYPES = frozenset({"image_url", "input_image", "image"})
IGNORED_PART_TYPES = frozenset({"refusal"})
OPENAI_FINISH = {"stop_sequence": "stop"}


def flatten_content(content: Content, param: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    texts: list[str] = []
    for part in content:
        if part.type in TEXT_PART_TYPES:
            texts.append(part.text or "")
        elif part.type not in IMAGE_PART_TYPES and part.type not in IGNORED_PART_TYPES:
            raise bad_request(f"unsupported content part type {part.type!r}", param)
    return "\n".join(t for t in texts if t)


def images_of(content: Content, param: str, counter: ImageCounter) -> list[ImageInput]:
    if content is None or isinstance(content, str):
        return []
    images: list[ImageInput] = []
    for position, part in enumerate(content):
        if part.type not in IMAGE_PART_TYPES:
            continue
        where = f"{param}[{position}]"
        source = part.image_url
        url = source if isinstance(source, str) else (source.url if source else "")
        if not url:
            raise bad_request("an image part needs image_url.url", where)
        images.append(counter.add(from_url(url, where), where))
    return images


def _tool_spec(function: FunctionDef) -> ToolSpec:
    return ToolSpec(
        name=function.name,
        description=function.description or "",
        parameters_json=json_encode(function.parameters or {}).decode(),
    )


def tools_of(body: ChatCompletionsBody) -> list[ToolSpec]:
    specs: list[ToolSpec] = []
    for index, tool in enumerate(body.tools or []):
        if tool.type != "function" or tool.function is None:
            raise bad_request(
                f"only function tools are supported, got {tool.type!r}", f"tools[{index}]"
            )
        specs.append(_tool_spec(tool.function))
    specs += [_tool_spec(f) for f in body.functions or []]
    return specs


def tool_choice_of(body: ChatCompletionsBody, tools: list[ToolSpec]) -> str:
    choice = body.tool_choice if body.tool_choice is not None else body.function_call
    if choice is None:
        return "auto"
    if isinstance(choice, str):
        if choice not in ("auto", "none", "required"):
            raise bad_request(f"unknown tool_choice {choice!r}", "tool_choice")
        return check_tool_choice(choice, tools)
    name = getattr(choice, "name", None) or getattr(getattr(choice, "function", None), "name", None)
    if not name:
        raise bad_request("tool_choice object needs function.name", "tool_choice")
    return check_tool_choice(name, tools)


def _message(
    m: ChatMessageIn, index: int, call_names: dict[str, str], counter: ImageCounter
) -> Message | None:
    param = f"messages[{index}].content"
    text = flatten_content(m.content, param)
    if m.role in ("system", "developer"):
        return Message(role="system", text=text) if text else None
    if m.role == "user":
        images = images_of(m.content, param, counter)
        return (
            Message(role="user", text=text, name=m.name or "", images=images)
            if text or images
            else None
        )
    if m.role == "assistant":
        calls = [
            ParsedCall(c.function.name, arguments_from_json(c.function.arguments))
            for c in m.tool_calls or []
        ]
        for call in m.tool_calls or []:
            call_names[call.id] = call.function.name
        if m.function_call is not None:
            calls.append(
                ParsedCall(m.function_call.name, arguments_from_json(m.function_call.arguments))
            )
        turn = render_assistant_turn(text, calls)
        return Message(role="assistant", text=turn) if turn else None
    if m.role in ("tool", "function"):
        call_id = m.tool_call_id or ""
        name = m.name or call_names.get(call_id, "")
        return Message(role="tool", text=render_tool_result(call_id, name, text), name=name)
    raise bad_request(f"unknown message role {m.role!r}", f"messages[{index}].role")


def messages_of(body: ChatCompletionsBody) -> list[Message]:
    call_names: dict[str, str] = {}
    counter = ImageCounter()
    converted = (_message(m, i, call_names, counter) for i, m in enumerate(body.messages))
    return [m for m in converted if m is not None]


def _turn(m: ChatMessageIn, index: int, counter: ImageCounter) -> ChatTurn | None:
    param = f"messages[{index}].content"
    text = flatten_content(m.content, param)
    images = images_of(m.content, param, counter)
    if images and m.role != "user":
        raise bad_request("images are only allowed in user messages", param)
    if m.role in ("system", "developer"):
        return ChatTurn(role="system", text=text) if text else None
    if m.role == "user":
        return user_turn(text, images, m.name or "")
    if m.role == "assistant":
        calls = [
            prior_call(c.id, c.function.name, c.function.arguments) for c in m.tool_calls or []
        ]
        if m.function_call is not None:
            calls.append(prior_call("", m.function_call.name, m.function_call.arguments))
        return ChatTurn(role="assistant", text=text, tool_calls=calls) if text or calls else None
    if m.role in ("tool", "function"):
        return ChatTurn(
            role="tool", text=text, name=m.name or "", tool_call_id=m.tool_call_id or ""
        )
    return None  # unknown roles were refused by messages_of


def turns_of(body: ChatCompletionsBody) -> list[ChatTurn]:
    counter = ImageCounter()
    converted = (_turn(m, i, counter) for i, m in enumerate(body.messages))
    return [t for t in converted if t is not None]


def plan_chat(
    body: ChatCompletionsBody, *, default_model: str, affinity_header: str | None
) -> ChatPlan:
    if body.n is not None and body.n != 1:
        raise bad_request("n > 1 is not supported: this gateway returns exactly one choice", "n")
    messages = messages_of(body)
    turns = turns_of(body)
    require_content(messages, turns)
    tools = tools_of(body)
    choice = tool_choice_of(body, tools)
    system, first = first_texts(messages)
    max_tokens = (
        body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    )
    return ChatPlan(
        api=ApiFlavor.OPENAI,
        model=body.model or default_model,
        messages=with_tool_instructions(messages, tools, choice),
        tools=tools,
        tool_choice=choice,
        max_tokens=check_max_tokens(max_tokens, "max_tokens"),
        stop=normalize_stop(body.stop),
        stream=body.stream,
        include_usage=bool(body.stream_options and body.stream_options.include_usage),
        affinity_source=affinity_source(
            header=affinity_header, user=body.user, system_text=system, first_text=first
        ),
        call_id_prefix="call_",
        turns=turns,
        temperature=body.temperature,
        reasoning_effort=body.reasoning_effort or "",
    )


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


async def chat_completions(request: web.Request) -> web.StreamResponse:
    ctx, _body, plan, meta = await admit_chat(request, ChatCompletionsBody, plan_chat)
    completion_id, created = f"chatcmpl-{secrets.token_hex(12)}", int(time.time())
    if plan.stream:
        renderer = ChatStreamRenderer(completion_id, created, plan.model, plan.include_usage)
        return await stream_response(request, ctx, plan, meta, renderer)
    result = await collect(ctx, plan, meta)
    return json_response(chat_body(plan, result, completion_id, created))
