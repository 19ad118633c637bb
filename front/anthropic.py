"""Runs in the front: POST /v1/messages and /v1/messages/count_tokens — the Anthropic Messages API.

System prompt (string or blocks), content blocks (text, tool_use, tool_result; thinking is
dropped from history; images travel with their user message to either backend, and are
noted as text inside tool results) become a ChatPlan. `anthropic-version` / `anthropic-beta`
headers and `?beta=true` are tolerated: nothing here depends on them. A `system` role inside
`messages` (Claude Code's mid-conversation system beta) stays a system message in place.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

from aiohttp import web

from front.anthropic_stream import AnthropicStreamRenderer, messages_body
from front.bodies import json_response, read_body
from front.chat_entry import admit_chat, authenticate
from front.context import CONTEXT
from front.errors import ApiFlavor
from front.images import ImageCounter, from_base64, from_url
from front.plan import (
    Options,
    Translation,
    bad_request,
    check_max_tokens,
    check_tool_choice,
    normalize_stop,
)
from front.relay import collect, stream_response
from front.schemas_anthropic import Block, MessageIn, MessagesBody
from front.sse import json_encode
from front.tools import ParsedCall, render_assistant_turn, render_tool_result
from front.turns import prior_call, user_turn
from protocol.chat import ChatTurn, ImageInput, Message, ToolSpec

log = logging.getLogger(__name__)

IMAGE_NOTE = "[image omitted: this gateway passes text only]"
IMAGE_BLOCKS = ("image", "document")
SKIPPED_BLOCKS = frozenset(
    {"thinking", "redacted_thinking", "server_tool_use", "web_search_tool_result"}
)
CLIENT_TOOL_TYPES = (None, "custom")


def _result_text(content: str | list[Block] | None) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    parts = [IMAGE_NOTE if b.type in ("image", "document") else (b.text or "") for b in content]
    return "\n".join(p for p in parts if p)


def system_text(system: str | list[Block] | None) -> str:
    if system is None or isinstance(system, str):
        return system or ""
    return "\n".join(b.text or "" for b in system if b.type == "text")


def _turn(
    message: MessageIn, index: int, call_names: dict[str, str], counter: ImageCounter
) -> list[Message]:
    if message.role == "system":  # Claude Code's mid-conversation system messages (a beta)
        text = system_text(message.content)
        return [Message(role="system", text=text)] if text else []
    if message.role not in ("user", "assistant"):
        raise bad_request(
            f"unknown message role {message.role!r}: use user or assistant "
            "(or system, as Claude Code sends it)",
            f"messages[{index}].role",
        )
    if isinstance(message.content, str):
        return [Message(role=message.role, text=message.content)] if message.content else []
    texts: list[str] = []
    calls: list[ParsedCall] = []
    results: list[Message] = []
    images: list[ImageInput] = []
    for position, block in enumerate(message.content):
        where = f"messages[{index}].content[{position}]"
        if block.type == "text":
            texts.append(block.text or "")
        elif block.type in IMAGE_BLOCKS and message.role == "user":
            images.append(_image(block, where, counter))
        elif block.type == "tool_use":
            name = block.name or ""
            call_names[block.id or ""] = name
            calls.append(ParsedCall(name, block.input if isinstance(block.input, dict) else {}))
        elif block.type == "tool_result":
            call_id = block.tool_use_id or ""
            name = call_names.get(call_id, "")
            text = render_tool_result(
                call_id, name, _result_text(block.content), is_error=bool(block.is_error)
            )
            results.append(Message(role="tool", text=text, name=name))
        elif block.type not in SKIPPED_BLOCKS and block.type not in IMAGE_BLOCKS:
            raise bad_request(f"unsupported content block type {block.type!r}", where)
    text = "\n".join(t for t in texts if t)
    if message.role == "assistant":
        turn = render_assistant_turn(text, calls)
        return [Message(role="assistant", text=turn)] if turn else []
    user = Message(role="user", text=text, images=images)
    return results + ([user] if text or images else [])


def messages_of(body: MessagesBody) -> list[Message]:
    messages: list[Message] = []
    system = system_text(body.system)
    if system:
        messages.append(Message(role="system", text=system))
    call_names: dict[str, str] = {}
    counter = ImageCounter()
    for index, message in enumerate(body.messages):
        messages += _turn(message, index, call_names, counter)
    return messages


def _image(block: Block, where: str, counter: ImageCounter) -> ImageInput:
    if block.type == "document":
        raise bad_request("document blocks are not supported (images only)", where)
    source = block.source
    if source is not None and source.type == "base64":
        image = from_base64(source.media_type or "", source.data or "", where)
    elif source is not None and source.type == "url" and source.url:
        image = from_url(source.url, where)
    else:
        raise bad_request("an image block needs a base64 or url source", where)
    return counter.add(image, where)


def _structured(message: MessageIn, index: int, counter: ImageCounter) -> list[ChatTurn]:
    """One Anthropic message as ChatTurns: tool results first (each its own), then the rest."""
    if message.role == "system":
        text = system_text(message.content)
        return [ChatTurn(role="system", text=text)] if text else []
    if isinstance(message.content, str):
        return [ChatTurn(role=message.role, text=message.content)] if message.content else []
    texts, images, calls, results = [], [], [], []
    for position, block in enumerate(message.content):
        where = f"messages[{index}].content[{position}]"
        if block.type == "text":
            texts.append(block.text or "")
        elif block.type in IMAGE_BLOCKS:
            images.append(_image(block, where, counter))
        elif block.type == "tool_use":
            calls.append(prior_call(block.id or "", block.name or "", block.input))
        elif block.type == "tool_result":
            text = _result_text(block.content)
            text = f"[error] {text}" if block.is_error else text
            results.append(ChatTurn(role="tool", text=text, tool_call_id=block.tool_use_id or ""))
    text = "\n".join(t for t in texts if t)
    if message.role == "assistant":
        if images:
            raise bad_request("images are only allowed in user messages", f"messages[{index}]")
        return [ChatTurn(role="assistant", text=text, tool_calls=calls)] if text or calls else []
    turn = user_turn(text, images)
    return results + ([turn] if turn is not None else [])


def turns_of(body: MessagesBody) -> list[ChatTurn]:
    system = system_text(body.system)
    turns = [ChatTurn(role="system", text=system)] if system else []
    counter = ImageCounter()
    for index, message in enumerate(body.messages):
        turns += _structured(message, index, counter)
    return turns


def tools_of(body: MessagesBody) -> list[ToolSpec]:
    specs = []
    for tool in body.tools or []:
        if tool.type not in CLIENT_TOOL_TYPES:
            log.info("ignoring Anthropic server tool %s (%s)", tool.name, tool.type)
            continue
        specs.append(
            ToolSpec(
                name=tool.name,
                description=tool.description or "",
                parameters_json=json_encode(tool.input_schema or {}).decode(),
            )
        )
    return specs


def tool_choice_of(body: MessagesBody, tools: list[ToolSpec]) -> str:
    choice = body.tool_choice
    if choice is None or choice.type == "auto":
        return "auto"
    if choice.type == "none":
        return "none"
    if choice.type == "any":
        return check_tool_choice("required", tools)
    if choice.type == "tool" and choice.name:
        return check_tool_choice(choice.name, tools)
    raise bad_request(f"unsupported tool_choice type {choice.type!r}", "tool_choice")


def options_of(body: MessagesBody) -> Options:
    return Options(
        model=body.model,
        max_tokens=check_max_tokens(body.max_tokens, "max_tokens"),
        stop=normalize_stop(body.stop_sequences),
        stream=body.stream,
        user=body.metadata.user_id if body.metadata else None,
        temperature=body.temperature,
        reasoning_effort=_effort(body.thinking),
    )


def _effort(thinking: dict[str, Any] | None) -> str:
    """Extended thinking asked for (`{"type": "enabled", ...}`): a reasoning hint upstream."""
    return "medium" if thinking and thinking.get("type") == "enabled" else ""


MESSAGES = Translation(
    api=ApiFlavor.ANTHROPIC,
    body_type=MessagesBody,
    call_id_prefix="toolu_",
    messages=messages_of,
    turns=turns_of,
    tools=tools_of,
    tool_choice=tool_choice_of,
    options=options_of,
)


plan_messages = MESSAGES.plan  # what tests and count_tokens call


async def messages(request: web.Request) -> web.StreamResponse:
    ctx, body, plan, meta = await admit_chat(request, MESSAGES)
    del body  # the plan has what the reply needs; a stream need not keep the parsed body
    message_id = f"msg_{secrets.token_hex(12)}"
    if plan.stream:
        renderer = AnthropicStreamRenderer(message_id, plan.model, plan.prompt_tokens)
        return await stream_response(request, ctx, plan, meta, renderer)
    result = await collect(ctx, plan, meta)
    return json_response(messages_body(message_id, plan.model, result))


async def count_tokens(request: web.Request) -> web.Response:
    """Claude Code probes this: the estimate (protocol/tokens.py) the reply's usage will report."""
    ctx = request.app[CONTEXT]
    authenticate(request)
    body = await read_body(request, MessagesBody)
    plan = plan_messages(body, default_model=ctx.spec.default_model, affinity_header=None)
    payload: dict[str, Any] = {"input_tokens": plan.prompt_tokens}
    return json_response(payload)
