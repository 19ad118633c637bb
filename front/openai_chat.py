"""Runs in the front: POST /v1/chat/completions — OpenAI chat in, chat.completion(.chunk) out.

The translation (the body's parts that `build_plan` puts into a ChatPlan) is pure functions
here, the rendering lives in front/openai_chat_stream.py; the handler at the bottom only wires
them to the chat entry and the relay. Images (`image_url` parts) travel with their user message
in both forms: runtime workers pass them as ACP image prompt items, cloud workers upload them.
"""

from __future__ import annotations

import secrets
import time

from aiohttp import web

from front.bodies import json_response
from front.chat_entry import admit_chat
from front.errors import ApiFlavor
from front.images import ImageCounter, from_url
from front.openai_chat_stream import ChatStreamRenderer, chat_body
from front.plan import (
    Options,
    Translation,
    bad_request,
    check_max_tokens,
    check_tool_choice,
    normalize_stop,
    tool_choice_word,
)
from front.relay import collect, stream_response
from front.schemas_openai import ChatCompletionsBody, ChatMessageIn, Content, FunctionDef
from front.sse import json_encode
from front.tools import (
    ParsedCall,
    arguments_from_json,
    render_assistant_turn,
    render_tool_result,
)
from front.turns import prior_call, user_turn
from protocol.chat import ChatTurn, ImageInput, Message, ToolSpec

TEXT_PART_TYPES = frozenset({"text", "input_text", "output_text"})
IMAGE_PART_TYPES = frozenset({"image_url", "input_image", "image"})
IGNORED_PART_TYPES = frozenset({"refusal"})


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
        return tool_choice_word(choice, tools)
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


def refuse(body: ChatCompletionsBody) -> None:
    if body.n is not None and body.n != 1:
        raise bad_request("n > 1 is not supported: this gateway returns exactly one choice", "n")


def options_of(body: ChatCompletionsBody) -> Options:
    max_tokens = (
        body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    )
    return Options(
        model=body.model,
        max_tokens=check_max_tokens(max_tokens, "max_tokens"),
        stop=normalize_stop(body.stop),
        stream=body.stream,
        include_usage=bool(body.stream_options and body.stream_options.include_usage),
        user=body.user,
        temperature=body.temperature,
        reasoning_effort=body.reasoning_effort or "",
    )


CHAT_COMPLETIONS = Translation(
    api=ApiFlavor.OPENAI,
    body_type=ChatCompletionsBody,
    call_id_prefix="call_",
    messages=messages_of,
    turns=turns_of,
    tools=tools_of,
    tool_choice=tool_choice_of,
    options=options_of,
    refuse=refuse,
)


plan_chat = CHAT_COMPLETIONS.plan  # what tests and count_tokens call


async def chat_completions(request: web.Request) -> web.StreamResponse:
    ctx, body, plan, meta = await admit_chat(request, CHAT_COMPLETIONS)
    del body  # the plan has what the reply needs; a stream need not keep the parsed body
    completion_id, created = f"chatcmpl-{secrets.token_hex(12)}", int(time.time())
    if plan.stream:
        renderer = ChatStreamRenderer(completion_id, created, plan.model, plan.include_usage)
        return await stream_response(request, ctx, plan, meta, renderer)
    result = await collect(ctx, plan, meta)
    return json_response(chat_body(plan, result, completion_id, created))
