"""Runs in the emulator: what one cloud chat answers and how it streams (§14.15 Chat stream).

Rules match what the runtime side would match: the conversation from the last user message on,
with tool calls and results written the way the front's text emulation writes them (so one
script serves both backends). A normal reply: the first delta carries `role: "assistant"`,
text (and reasoning, when asked for) spread over several chunks, a native tool call whose
arguments arrive in three fragments, then `delta: {}` with `finish_reason` and `usage`, then
`[DONE]`. Once the conversation ends with a tool result the answer is text, so a tool loop
always ends. A rule's `error` streams its reply, then an in-band error envelope with that
status; `action` hang never finishes, drop cuts the connection. Faults live here too.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from typing import Any

import msgspec
from aiohttp import web

from emulator.cloud_settings import CloudKnobs
from emulator.cloud_wire import ChatStreamWire
from emulator.scripts import Action, CloudFault, ScriptBook, ScriptedAnswer, ToolCallSpec
from emulator.settings import Knobs
from emulator.turns import paced_chunks, sleep_ms, split_evenly, usage_for
from front.tools import render_tool_call, render_tool_result

_encode = msgspec.json.Encoder().encode
TOOL_ARGUMENT_FRAGMENTS = 3


@dataclass(frozen=True)
class CloudReply:
    answer: ScriptedAnswer
    model: str
    text: str
    reasoning: str
    tool_call: ToolCallSpec | None
    prompt_text: str


def content_text(content: Any) -> str:
    """A message's text: a string, or the `text` of its parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            str(part.get("text", "")) for part in content if isinstance(part, dict)
        ).strip()
    return ""


def _as_text(message: dict[str, Any]) -> str:
    """One message as the runtime side's prompt would show it."""
    text = content_text(message.get("content"))
    if message.get("role") == "tool":
        return render_tool_result(str(message.get("tool_call_id") or ""), "", text)
    calls = message.get("tool_calls")
    for call in calls if isinstance(calls, list) else []:
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            try:
                arguments = msgspec.json.decode(str(function.get("arguments") or "{}"))
            except msgspec.DecodeError:
                arguments = {}
            text += "\n\n" + render_tool_call(str(function.get("name")), arguments)
    return text.strip()


def since_last_user(messages: list[dict[str, Any]]) -> str:
    """The text rules match: the last user message and everything after it."""
    last = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=0)
    return "\n".join(_as_text(m) for m in messages[last:]).strip()


def _model(body: dict[str, Any]) -> str:
    config = body.get("model_config")
    key = config.get("key") if isinstance(config, dict) else ""
    return key if isinstance(key, str) and key else "auto"


def plan_reply(scripts: ScriptBook, cloud: CloudKnobs, body: dict[str, Any]) -> CloudReply:
    messages = [m for m in body.get("messages", []) if isinstance(m, dict)]
    model = _model(body)
    latest = since_last_user(messages)
    config = body.get("model_config")
    reasoning_model = isinstance(config, dict) and config.get("is_reasoning") is True
    answer = scripts.answer(latest, model, reasoning=cloud.reasoning and reasoning_model)
    after_tool = bool(messages) and messages[-1].get("role") == "tool"
    tool_call = None if after_tool else answer.tool_call
    text = answer.reply if answer.tool_call is not None else answer.text
    if after_tool and not text:
        result = content_text(messages[-1].get("content"))
        text = f"[lingma-emulator {model}] tool result received: {result[:200]}"
    prompt = "\n".join(content_text(m.get("content")) for m in messages)
    return CloudReply(answer, model, text, answer.thinking, tool_call, prompt)


def _pieces(text: str, knobs: Knobs, cloud: CloudKnobs) -> list[str]:
    if cloud.chunk_chars:
        return [text[i : i + cloud.chunk_chars] for i in range(0, len(text), cloud.chunk_chars)]
    return split_evenly(text, max(2, knobs.instant_chunks))


def _tool_fragments(call: ToolCallSpec, cloud: CloudKnobs) -> list[dict[str, Any]]:
    call_id = f"call_{secrets.token_hex(12)}"
    arguments = _encode(call.arguments).decode()
    head: dict[str, Any] = {"index": 0, "type": "function"}
    head["function"] = {"name": call.name, "arguments": ""}
    fragments = [head]
    if cloud.late_tool_id:
        fragments.append({"index": 0, "id": call_id})
    else:
        head["id"] = call_id
    size = max(1, -(-len(arguments) // TOOL_ARGUMENT_FRAGMENTS))
    fragments += [
        {"index": 0, "function": {"arguments": arguments[i : i + size]}}
        for i in range(0, len(arguments), size)
    ]
    return fragments


class _Writer:
    """One streamed answer: chunks out, with the scripted pause between them."""

    def __init__(self, response: web.StreamResponse, reply: CloudReply, cloud: CloudKnobs):
        self.response = response
        self.wire = ChatStreamWire(cloud, reply.model)
        self.pause_ms = reply.answer.chunk_delay_ms
        self.sent = 0
        self.first = True

    async def delta(self, delta: dict[str, Any]) -> None:
        if self.first:
            delta = {"role": "assistant", **delta}
            self.first = False
        await self.raw(self.wire.chunk(delta))

    async def raw(self, data: bytes) -> None:
        if self.sent and self.pause_ms:
            await sleep_ms(self.pause_ms)
        await self.response.write(data)
        self.sent += 1


async def stream_reply(
    request: web.Request, knobs: Knobs, cloud: CloudKnobs, reply: CloudReply
) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream;charset=UTF-8", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    out = _Writer(response, reply, cloud)
    await sleep_ms(knobs.first_token_ms + reply.answer.delay_ms)
    fault = reply.answer.cloud_fault
    action = reply.answer.action
    if action is Action.DROP:
        fault = CloudFault.CUT
    if fault is CloudFault.RATE_LIMIT_INBAND:
        await out.raw(out.wire.error(429, "429", "Too many requests (EMULATOR)"))
        return await _end(response)
    if fault in (CloudFault.CUT, CloudFault.TRUNCATE):
        return await _broken(request, response, out, reply, fault)
    error = reply.answer.error
    if error is not None or action is Action.HANG:
        await _text_only(out, reply, knobs, cloud)
        if error is None:
            await asyncio.get_running_loop().create_future()  # hang: until the client leaves
        assert error is not None
        message = error.message or f"scripted error {error.status}"
        await out.raw(out.wire.error(error.status, str(error.status), message))
        return await _end(response)
    await _answer(out, reply, knobs, cloud)
    if fault is CloudFault.ERROR_AFTER_FINISH:
        await out.raw(out.wire.error(500, "500", "Internal server error (EMULATOR)"))
        return await _end(response)
    await out.raw(out.wire.done())
    return await _end(response)


async def _text_only(out: _Writer, reply: CloudReply, knobs: Knobs, cloud: CloudKnobs) -> None:
    for piece in _pieces(reply.reasoning, knobs, cloud):
        await out.delta({"reasoning_content": piece})
    if cloud.chunk_chars or knobs.tokens_per_s <= 0:
        for piece in _pieces(reply.text, knobs, cloud):
            await out.delta({"content": piece})
    else:
        async for piece in paced_chunks(reply.text, knobs):
            await out.delta({"content": piece})


async def _answer(out: _Writer, reply: CloudReply, knobs: Knobs, cloud: CloudKnobs) -> None:
    empty = reply.answer.cloud_fault is CloudFault.EMPTY
    if not empty:
        await _text_only(out, reply, knobs, cloud)
        if reply.tool_call is not None:
            for fragment in _tool_fragments(reply.tool_call, cloud):
                await out.delta({"tool_calls": [fragment]})
    if out.first:
        await out.delta({"content": ""})
    finish = "tool_calls" if reply.tool_call is not None and not empty else "stop"
    usage = usage_for(reply.prompt_text, "" if empty else reply.text)
    wire_usage = None if cloud.no_usage else usage.as_wire()
    await out.raw(out.wire.chunk({}, finish, wire_usage))
    if cloud.stats_line:
        await out.raw(out.wire.stats(usage.prompt_tokens, usage.completion_tokens))


async def _broken(
    request: web.Request,
    response: web.StreamResponse,
    out: _Writer,
    reply: CloudReply,
    fault: CloudFault,
) -> web.StreamResponse:
    """A few chunks of the answer, then no finish: the connection drops, or just ends."""
    for piece in split_evenly(reply.text, 4)[:2]:
        await out.delta({"content": piece})
    if fault is CloudFault.CUT and request.transport is not None:
        request.transport.abort()
        return response
    return await _end(response)


async def _end(response: web.StreamResponse) -> web.StreamResponse:
    await response.write_eof()
    return response
