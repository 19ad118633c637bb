"""Runs in the front: POST /v1/messages and /v1/messages/count_tokens — the Anthropic Messages API.

System prompt (string or blocks), content blocks (text, tool_use, tool_result; thinking is
dropped from history; images are refused with a clear 400, and noted as text inside tool
results) become a ChatPlan. `anthropic-version` / `anthropic-beta` headers and `?beta=true`
are tolerated: nothing here depends on them. A `system` role inside `messages` (Claude Code's
mid-conversation system beta) stays a system message in place.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

from aiohttp import web

from front.anthropic_stream import AnthropicStreamRenderer, messages_body
from front.auth import require_api_key
from front.context import CONTEXT
from front.errors import ApiFlavor
from front.httpkit import admit_chat, json_response, read_body
from front.plan import (
    ChatPlan,
    bad_request,
    check_max_tokens,
    check_tool_choice,
    first_texts,
    normalize_stop,
    require_messages,
    with_tool_instructions,
)
from front.relay import collect, stream_response
from front.routing import affinity_source
from front.schemas_anthropic import Block, MessageIn, MessagesBody
from front.sse import json_encode
from front.tools import ParsedCall, render_assistant_turn, render_tool_result
from protocol.messages import Message, ToolSpec

log = logging.getLogger(__name__)

IMAGE_NOTE = "[image omitted: this gateway passes text only]"
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


def _turn(message: MessageIn, index: int, call_names: dict[str, str]) -> list[Message]:
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
    for position, block in enumerate(message.content):
        where = f"messages[{index}].content[{position}]"
        if block.type == "text":
            texts.append(block.text or "")
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
        elif block.type in ("image", "document"):
            raise bad_request(
                f"{block.type} content is not supported by this gateway (text only)", where
            )
        elif block.type not in SKIPPED_BLOCKS:
            raise bad_request(f"unsupported content block type {block.type!r}", where)
    text = "\n".join(t for t in texts if t)
    if message.role == "assistant":
        turn = render_assistant_turn(text, calls)
        return [Message(role="assistant", text=turn)] if turn else []
    return results + ([Message(role="user", text=text)] if text else [])


def messages_of(body: MessagesBody) -> list[Message]:
    messages: list[Message] = []
    system = system_text(body.system)
    if system:
        messages.append(Message(role="system", text=system))
    call_names: dict[str, str] = {}
    for index, message in enumerate(body.messages):
        messages += _turn(message, index, call_names)
    return require_messages(messages)


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


def plan_messages(
    body: MessagesBody, *, default_model: str, affinity_header: str | None
) -> ChatPlan:
    messages = messages_of(body)
    tools = tools_of(body)
    choice = tool_choice_of(body, tools)
    system, first = first_texts(messages)
    user = body.metadata.user_id if body.metadata else None
    return ChatPlan(
        api=ApiFlavor.ANTHROPIC,
        model=body.model or default_model,
        messages=with_tool_instructions(messages, tools, choice),
        tools=tools,
        tool_choice=choice,
        max_tokens=check_max_tokens(body.max_tokens, "max_tokens"),
        stop=normalize_stop(body.stop_sequences),
        stream=body.stream,
        affinity_source=affinity_source(
            header=affinity_header, user=user, system_text=system, first_text=first
        ),
        call_id_prefix="toolu_",
    )


async def messages(request: web.Request) -> web.StreamResponse:
    ctx, _body, plan, meta = await admit_chat(request, MessagesBody, plan_messages)
    message_id = f"msg_{secrets.token_hex(12)}"
    if plan.stream:
        renderer = AnthropicStreamRenderer(message_id, plan.model, plan.prompt_tokens)
        return await stream_response(request, ctx, plan, meta, renderer)
    result = await collect(ctx, plan, meta)
    return json_response(messages_body(message_id, plan.model, result))


async def count_tokens(request: web.Request) -> web.Response:
    """Claude Code probes this: the estimate (protocol/tokens.py) the reply's usage will report."""
    ctx = request.app[CONTEXT]
    require_api_key(request.headers, ctx.spec.api_keys)
    body = await read_body(request, MessagesBody)
    plan = plan_messages(body, default_model=ctx.spec.default_model, affinity_header=None)
    payload: dict[str, Any] = {"input_tokens": plan.prompt_tokens}
    return json_response(payload)
