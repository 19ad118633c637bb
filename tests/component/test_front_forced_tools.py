"""A forced tool choice through a real front and worker: a call or an error, never prose.

The emulator's script answers the first ask in prose; a rule matching the front's stricter
retry instruction decides what the retry says. Every API, streamed and not.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest

from tests.component.api_support import client_session, post, running_gateway
from tests.harness import ADMIN_TOKEN, DirectGateway

pytestmark = pytest.mark.component

SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
    "required": ["city", "unit"],
}
NOTE_SCHEMA = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}
RETRY = "did not call a tool"  # in the front's retry instruction (front/tools.py)
PROSE = "It is sunny in Paris today."
ARGS = {"city": "Paris", "unit": "c"}
CASES = [
    pytest.param(api, stream, id=f"{api}-{'stream' if stream else 'json'}")
    for api in ("chat", "responses", "messages")
    for stream in (False, True)
]


@pytest.fixture(scope="module")
def gateway() -> Iterator[DirectGateway]:
    with running_gateway("lgw-ft-", workers=1) as gateway:
        yield gateway


@pytest.fixture
async def http(gateway: DirectGateway) -> AsyncIterator[aiohttp.ClientSession]:
    async with client_session(gateway) as session:
        yield session


def request(api: str, stream: bool, choice: str, tool: str = "get_weather") -> dict[str, Any]:
    """A request for the weather that forces `choice` ("required" or the tool's name)."""
    schema = NOTE_SCHEMA if tool == "note" else SCHEMA
    text = "What is the weather in Paris?"
    if api == "messages":
        picked = {"type": "any"} if choice == "required" else {"type": "tool", "name": choice}
        tools: list[dict[str, Any]] = [{"name": tool, "input_schema": schema}]
        return {
            "model": "auto",
            "max_tokens": 256,
            "stream": stream,
            "messages": [{"role": "user", "content": text}],
            "tools": tools,
            "tool_choice": picked,
        }
    if api == "responses":
        forced: Any = choice if choice == "required" else {"type": "function", "name": choice}
        tools = [{"type": "function", "name": tool, "parameters": schema}]
        return {
            "model": "auto",
            "stream": stream,
            "input": text,
            "tools": tools,
            "tool_choice": forced,
        }
    named: Any = (
        choice if choice == "required" else {"type": "function", "function": {"name": choice}}
    )
    tools = [{"type": "function", "function": {"name": tool, "parameters": schema}}]
    return {
        "model": "auto",
        "stream": stream,
        "messages": [{"role": "user", "content": text}],
        "tools": tools,
        "tool_choice": named,
    }


def summary(api: str, body: Any, events: list[tuple[str, Any]]) -> tuple[list[Any], str, str]:
    """(calls as (name, arguments), visible text, finish reason) of any API's reply."""
    return {"chat": _chat, "responses": _responses, "messages": _messages}[api](body, events)


def _responses(body: Any, events: list[tuple[str, Any]]) -> tuple[list[Any], str, str]:
    final = body if body is not None else events[-1][1]["response"]
    output = final["output"]
    calls = [
        (i["name"], json.loads(i["arguments"])) for i in output if i["type"] == "function_call"
    ]
    texts = [i for i in output if i["type"] == "message"]
    streamed = [e for e, _ in events if e == "response.output_text.delta"]
    return calls, json.dumps(texts) if texts or streamed else "", final["status"]


def _messages(body: Any, events: list[tuple[str, Any]]) -> tuple[list[Any], str, str]:
    if body is not None:
        uses = [(b["name"], b["input"]) for b in body["content"] if b["type"] == "tool_use"]
        text = "".join(b.get("text", "") for b in body["content"] if b["type"] == "text")
        return uses, text, body["stop_reason"]
    names: list[str] = []
    arguments: list[str] = []
    text, stop = "", ""
    for name, data in events:
        if name == "content_block_start" and data["content_block"]["type"] == "tool_use":
            names.append(data["content_block"]["name"])
            arguments.append("")
        elif name == "content_block_delta" and data["delta"]["type"] == "input_json_delta":
            arguments[-1] += data["delta"]["partial_json"]
        elif name == "content_block_delta" and data["delta"]["type"] == "text_delta":
            text += data["delta"]["text"]
        elif name == "message_delta":
            stop = data["delta"]["stop_reason"]
    return [(n, json.loads(a)) for n, a in zip(names, arguments, strict=True)], text, stop


def _chat(body: Any, events: list[tuple[str, Any]]) -> tuple[list[Any], str, str]:
    if body is not None:
        choice = body["choices"][0]
        message = choice["message"]
        calls = [
            (c["function"]["name"], json.loads(c["function"]["arguments"]))
            for c in message.get("tool_calls") or []
        ]
        return calls, message["content"] or "", choice["finish_reason"]
    calls, text, finish = [], "", ""
    for _, data in events:
        if data == "[DONE]" or not data.get("choices"):
            continue
        choice = data["choices"][0]
        text += choice["delta"].get("content") or ""
        for call in choice["delta"].get("tool_calls") or []:
            calls.append((call["function"]["name"], json.loads(call["function"]["arguments"])))
        finish = choice["finish_reason"] or finish
    return calls, text, finish


FINISH = {"chat": "tool_calls", "responses": "completed", "messages": "tool_use"}


async def session_hits(http: aiohttp.ClientSession) -> int:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with http.get("/internal/stats", headers=headers) as response:
        return int((await response.json())["pool"][0]["stats"]["session_hits"])


@pytest.mark.parametrize(("api", "stream"), CASES)
async def test_prose_is_retried_and_the_retry_calls_the_tool(
    http: aiohttp.ClientSession, gateway: DirectGateway, api: str, stream: bool
) -> None:
    gateway.set_script(
        [
            {"match": RETRY, "tool_call": {"name": "get_weather", "arguments": ARGS}},
            {"match": "weather", "reply": PROSE},
        ]
    )
    hits = await session_hits(http)
    status, body, events = await post(http, api, request(api, stream, "get_weather"))
    assert status == 200
    calls, text, finish = summary(api, body, events)
    assert calls == [("get_weather", ARGS)] and finish == FINISH[api]
    assert text == "" and "sunny" not in json.dumps([body, events])  # the prose never shows
    assert await session_hits(http) == hits + 1  # the retry continued the first answer's session


@pytest.mark.parametrize(("api", "stream"), CASES)
async def test_two_prose_replies_become_the_call_their_json_describes(
    http: aiohttp.ClientSession, gateway: DirectGateway, api: str, stream: bool
) -> None:
    gateway.set_script(
        [
            {"match": RETRY, "reply": "Sorry, I cannot call tools here."},
            {"match": "weather", "reply": f"I would look up {json.dumps(ARGS)} for you."},
        ]
    )
    status, body, events = await post(http, api, request(api, stream, "required"))
    assert status == 200
    calls, text, finish = summary(api, body, events)
    assert (calls, text, finish) == ([("get_weather", ARGS)], "", FINISH[api])


@pytest.mark.parametrize("api", ["chat", "messages"])
async def test_a_single_required_string_parameter_gets_the_prose(
    http: aiohttp.ClientSession, gateway: DirectGateway, api: str
) -> None:
    gateway.set_script([{"match": RETRY, "reply": "Noted."}, {"match": "weather", "reply": PROSE}])
    status, body, events = await post(http, api, request(api, False, "note", tool="note"))
    assert status == 200
    assert summary(api, body, events)[0] == [("note", {"text": PROSE})]


ERROR_SHAPES = {
    "chat": lambda body: body["error"]["code"] == "upstream_error",
    "responses": lambda body: body["error"]["code"] == "upstream_error",
    "messages": lambda body: body["type"] == "error" and body["error"]["type"] == "api_error",
}


@pytest.mark.parametrize(("api", "stream"), CASES)
async def test_prose_with_nothing_to_build_a_call_from_is_a_clear_502(
    http: aiohttp.ClientSession, gateway: DirectGateway, api: str, stream: bool
) -> None:
    gateway.set_script([{"reply": PROSE}])
    status, body, events = await post(http, api, request(api, stream, "get_weather"))
    assert (status, events) == (502, [])  # nothing was streamed: a real HTTP status
    assert ERROR_SHAPES[api](body)
    message = body["error"]["message"]
    assert "get_weather" in message and "prose" in message and "sunny" not in message
