"""Runs in the front: POST /v1/responses (and /responses) — the OpenAI Responses API.

Input items (messages, function_call, function_call_output; input_image parts only in the
structured turns cloud-backend workers read) become a ChatPlan; the reply is a
`response` object, or the Responses event stream (response.created, output items, text and
function-call argument deltas, response.completed / incomplete / failed).
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from aiohttp import web

from front.bodies import json_response
from front.chat_entry import admit_chat
from front.errors import ApiFlavor
from front.images import ImageCounter, from_url
from front.openai_responses_stream import ResponsesStreamRenderer, envelope_extras, response_body
from front.plan import (
    Options,
    Translation,
    bad_request,
    check_max_tokens,
    check_tool_choice,
    tool_choice_word,
)
from front.relay import collect, stream_response
from front.schemas_openai import InputItem, ResponsesBody, ResponsesContent
from front.sse import json_encode
from front.tools import arguments_from_json, render_tool_call, render_tool_result
from front.turns import merged_assistant_turns, prior_call, user_turn
from protocol.chat import ChatTurn, ImageInput, Message, ToolSpec

TEXT_PART_TYPES = frozenset({"input_text", "output_text", "text"})
# `additional_tools` is how Codex's newest default models receive their (code-mode) tools; those
# tools cannot be emulated, so the item is skipped and such a model answers in plain text.
SKIPPED_ITEM_TYPES = frozenset({"reasoning", "item_reference", "additional_tools"})


def flatten_input(content: ResponsesContent, param: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    texts: list[str] = []
    for part in content:
        if part.type in TEXT_PART_TYPES:
            texts.append(part.text or "")
        elif part.type in ("input_file", "input_audio"):
            raise bad_request(f"{part.type} is not supported by this gateway", param)
        elif part.type not in ("refusal", "input_image"):
            raise bad_request(f"unsupported content part type {part.type!r}", param)
    return "\n".join(t for t in texts if t)


def _item_message(
    item: InputItem, index: int, call_names: dict[str, str], counter: ImageCounter
) -> Message | None:
    param = f"input[{index}]"
    if item.type == "message":
        text = flatten_input(item.content, f"{param}.content")
        role = {"developer": "system", "system": "system", "assistant": "assistant"}.get(
            item.role, "user"
        )
        if role == "user":
            images = images_of(item.content, f"{param}.content", counter)
            return Message(role=role, text=text, images=images) if text or images else None
        return Message(role=role, text=text) if text else None
    if item.type == "function_call":
        call_names[item.call_id] = item.name
        return Message(
            role="assistant", text=render_tool_call(item.name, arguments_from_json(item.arguments))
        )
    if item.type == "function_call_output":
        name = call_names.get(item.call_id, "")
        output = flatten_input(item.output, f"{param}.output")
        return Message(role="tool", text=render_tool_result(item.call_id, name, output), name=name)
    if item.type in SKIPPED_ITEM_TYPES:
        return None
    raise bad_request(f"unsupported input item type {item.type!r}", f"{param}.type")


def _merge_assistant_turns(messages: list[Message]) -> list[Message]:
    """Consecutive assistant items (text + function_calls) are one turn for the model."""
    merged: list[Message] = []
    for message in messages:
        if merged and message.role == "assistant" and merged[-1].role == "assistant":
            merged[-1] = Message(role="assistant", text=f"{merged[-1].text}\n\n{message.text}")
        else:
            merged.append(message)
    return merged


def images_of(content: ResponsesContent, param: str, counter: ImageCounter) -> list[ImageInput]:
    if content is None or isinstance(content, str):
        return []
    images: list[ImageInput] = []
    for position, part in enumerate(content):
        if part.type != "input_image":
            continue
        where = f"{param}[{position}]"
        if not part.image_url:
            raise bad_request("input_image needs image_url (file_id is not supported)", where)
        images.append(counter.add(from_url(part.image_url, where), where))
    return images


def _item_turn(item: InputItem, index: int, counter: ImageCounter) -> ChatTurn | None:
    param = f"input[{index}]"
    if item.type == "message":
        text = flatten_input(item.content, f"{param}.content")
        images = images_of(item.content, f"{param}.content", counter)
        role = {"developer": "system", "system": "system", "assistant": "assistant"}.get(
            item.role, "user"
        )
        if role == "user":
            return user_turn(text, images)
        if images:
            raise bad_request("images are only allowed in user messages", f"{param}.content")
        return ChatTurn(role=role, text=text) if text else None
    if item.type == "function_call":
        call = prior_call(item.call_id, item.name, item.arguments)
        return ChatTurn(role="assistant", tool_calls=[call])
    if item.type == "function_call_output":
        output = flatten_input(item.output, f"{param}.output")
        return ChatTurn(role="tool", text=output, tool_call_id=item.call_id)
    return None


def turns_of(body: ResponsesBody) -> list[ChatTurn]:
    turns = [ChatTurn(role="system", text=body.instructions)] if body.instructions else []
    if isinstance(body.input, str):
        return [*turns, ChatTurn(role="user", text=body.input)]
    counter = ImageCounter()
    converted = (_item_turn(item, i, counter) for i, item in enumerate(body.input))
    return merged_assistant_turns([*turns, *(t for t in converted if t is not None)])


def messages_of(body: ResponsesBody) -> list[Message]:
    messages: list[Message] = []
    if body.instructions:
        messages.append(Message(role="system", text=body.instructions))
    if isinstance(body.input, str):
        messages.append(Message(role="user", text=body.input))
    else:
        call_names: dict[str, str] = {}
        counter = ImageCounter()
        for index, item in enumerate(body.input):
            message = _item_message(item, index, call_names, counter)
            if message is not None:
                messages.append(message)
    return _merge_assistant_turns(messages)


def tools_of(body: ResponsesBody) -> list[ToolSpec]:
    return [
        ToolSpec(
            name=tool.name,
            description=tool.description or "",
            parameters_json=json_encode(tool.parameters or {}).decode(),
        )
        for tool in body.tools or []
        if tool.type == "function" and tool.name  # hosted tools (web_search, ...) do not exist here
    ]


def tool_choice_of(body: ResponsesBody, tools: list[ToolSpec]) -> str:
    choice = body.tool_choice
    if choice is None:
        return "auto"
    if isinstance(choice, str):
        return tool_choice_word(choice, tools)
    if choice.type != "function" or not choice.name:
        raise bad_request(f"unsupported tool_choice type {choice.type!r}", "tool_choice")
    return check_tool_choice(choice.name, tools)


def refuse(body: ResponsesBody) -> None:
    if body.previous_response_id:
        raise bad_request(
            "previous_response_id is not supported (responses are not stored): send the full input",
            "previous_response_id",
        )


def options_of(body: ResponsesBody) -> Options:
    return Options(
        model=body.model,
        max_tokens=check_max_tokens(body.max_output_tokens, "max_output_tokens"),
        stream=body.stream,
        user=body.user,
        temperature=body.temperature,
        reasoning_effort=_effort(body.reasoning),
    )


def _effort(reasoning: dict[str, Any] | None) -> str:
    effort = reasoning.get("effort") if reasoning else None
    return effort if isinstance(effort, str) else ""


RESPONSES = Translation(
    api=ApiFlavor.RESPONSES,
    body_type=ResponsesBody,
    call_id_prefix="call_",
    messages=messages_of,
    turns=turns_of,
    tools=tools_of,
    tool_choice=tool_choice_of,
    options=options_of,
    refuse=refuse,
)


plan_responses = RESPONSES.plan  # what tests and count_tokens call


async def responses(request: web.Request) -> web.StreamResponse:
    ctx, body, plan, meta = await admit_chat(request, RESPONSES)
    response_id, created = f"resp_{secrets.token_hex(12)}", int(time.time())
    if plan.stream:
        renderer = ResponsesStreamRenderer(
            response_id, created, plan.model, envelope_extras(plan, body)
        )
        return await stream_response(request, ctx, plan, meta, renderer)
    result = await collect(ctx, plan, meta)
    return json_response(response_body(plan, body, response_id, created, result))
