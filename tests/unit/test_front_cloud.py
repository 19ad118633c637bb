"""Unit: what the front does for cloud-backend workers — structured turns, images, native tools,
per-backend requests and image routing."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import msgspec
import pytest

from front.anthropic import plan_messages
from front.backends import RequestForms
from front.errors import ApiError, ApiFlavor, ErrorKind
from front.images import MAX_IMAGE_BYTES, MAX_IMAGES
from front.openai_chat import plan_chat
from front.openai_responses import plan_responses
from front.pipeline import EventPipeline
from front.plan import ChatPlan
from front.schemas_anthropic import MessagesBody
from front.schemas_openai import ChatCompletionsBody, ResponsesBody
from front.tools import ACTION_FENCE_OPEN
from front.worker_pool import WorkerLink
from protocol.chat import ChatTurn, Delta, ImageInput, Message, ToolCall, ToolSpec
from protocol.child_socket import Pong
from protocol.front_socket import WorkerRef
from protocol.vocabulary import Backend, ChildState, LoginState

pytestmark = pytest.mark.unit

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(16)).decode()
GIF = base64.b64encode(b"GIF89a" + bytes(16)).decode()
TOOL: Any = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object"}},
}


def chat(body: dict[str, Any]) -> ChatPlan:
    return plan_chat(
        msgspec.convert(body, ChatCompletionsBody), default_model="auto", affinity_header=None
    )


def responses(body: dict[str, Any]) -> ChatPlan:
    return plan_responses(
        msgspec.convert(body, ResponsesBody), default_model="auto", affinity_header=None
    )


def anthropic(body: dict[str, Any]) -> ChatPlan:
    return plan_messages(
        msgspec.convert(body, MessagesBody), default_model="auto", affinity_header=None
    )


def shape(turns: list[ChatTurn]) -> list[tuple[str, str, list[str], str]]:
    return [(t.role, t.text, [c.call_id for c in t.tool_calls], t.tool_call_id) for t in turns]


def test_openai_chat_turns_keep_tool_calls_and_results_apart() -> None:
    plan = chat(
        {
            "messages": [
                {"role": "developer", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Weather?"}]},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"c":1}'},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            ],
            "tools": [TOOL],
            "temperature": 0.3,
            "reasoning_effort": "high",
        }
    )
    assert shape(plan.turns) == [
        ("system", "Be brief.", [], ""),
        ("user", "Weather?", [], ""),
        ("assistant", "", ["call_1"], ""),
        ("tool", "sunny", [], "call_1"),
    ]
    assert plan.turns[2].tool_calls[0].arguments_json == '{"c":1}'
    assert plan.temperature == 0.3 and plan.reasoning_effort == "high"
    assert not any(ACTION_FENCE_OPEN in t.text for t in plan.turns)  # no tool instructions
    assert any(ACTION_FENCE_OPEN in m.text for m in plan.messages)  # (the runtime form has them)


def test_anthropic_turns_results_first_images_and_thinking() -> None:
    plan = anthropic(
        {
            "system": "S",
            "thinking": {"type": "enabled", "budget_tokens": 1000},
            "messages": [
                {"role": "user", "content": "Weather?"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "hmm"},
                        {
                            "type": "tool_use",
                            "id": "toolu_1",
                            "name": "get_weather",
                            "input": {"c": 1},
                        },
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "toolu_1",
                            "content": "sunny",
                            "is_error": True,
                        },
                        {"type": "text", "text": "and this?"},
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                        },
                    ],
                },
            ],
        }
    )
    assert shape(plan.turns) == [
        ("system", "S", [], ""),
        ("user", "Weather?", [], ""),
        ("assistant", "", ["toolu_1"], ""),
        ("tool", "[error] sunny", [], "toolu_1"),
        ("user", "and this?", [], ""),
    ]
    assert plan.turns[2].tool_calls[0].arguments_json == '{"c":1}'
    assert plan.turns[4].images == [ImageInput(media_type="image/png", data_b64=PNG)]
    assert plan.images == 1 and plan.reasoning_effort == "medium"


def test_responses_turns_merge_function_calls_and_take_images() -> None:
    plan = responses(
        {
            "instructions": "I",
            "input": [
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "look"},
                        {"type": "input_image", "image_url": "https://example.com/a.png"},
                    ],
                },
                {"type": "message", "role": "assistant", "content": "checking"},
                {
                    "type": "function_call",
                    "call_id": "c1",
                    "name": "get_weather",
                    "arguments": "{}",
                },
                {
                    "type": "function_call",
                    "call_id": "c2",
                    "name": "get_weather",
                    "arguments": "{}",
                },
                {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
            ],
            "reasoning": {"effort": "low"},
        }
    )
    assert shape(plan.turns) == [
        ("system", "I", [], ""),
        ("user", "look", [], ""),
        ("assistant", "checking", ["c1", "c2"], ""),
        ("tool", "sunny", [], "c1"),
    ]
    assert plan.turns[1].images == [ImageInput(url="https://example.com/a.png")]
    assert plan.reasoning_effort == "low"


def image_part(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}}


def user_with(*parts: dict[str, Any]) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": [{"type": "text", "text": "x"}, *parts]}]}


@pytest.mark.parametrize(
    ("parts", "kind", "needle"),
    [
        ([image_part("data:image/bmp;base64," + PNG)], ErrorKind.BAD_REQUEST, "not supported"),
        ([image_part("data:image/png;base64,!!!")], ErrorKind.BAD_REQUEST, "not valid base64"),
        (
            [image_part("data:image/png;base64," + GIF[:4] + "AAAA")],
            ErrorKind.BAD_REQUEST,
            "not a PNG",
        ),
        ([image_part("file:///etc/passwd")], ErrorKind.BAD_REQUEST, "http"),
        ([image_part("data:image/png,raw")], ErrorKind.BAD_REQUEST, "base64"),
        (
            [image_part("data:image/png;base64," + "A" * (MAX_IMAGE_BYTES * 4 // 3 + 8))],
            ErrorKind.TOO_LARGE,
            "larger",
        ),
        ([image_part("https://e.com/x.png")] * (MAX_IMAGES + 1), ErrorKind.BAD_REQUEST, "at most"),
    ],
)
def test_image_limits(parts: list[dict[str, Any]], kind: ErrorKind, needle: str) -> None:
    with pytest.raises(ApiError, match=needle) as caught:
        chat(user_with(*parts))
    assert caught.value.kind is kind


def test_images_are_sniffed_not_trusted() -> None:
    plan = chat(user_with(image_part("data:image/jpeg;base64," + GIF)))  # a GIF labelled JPEG
    assert plan.turns[0].images == [ImageInput(media_type="image/gif", data_b64=GIF)]
    with pytest.raises(ApiError, match="only allowed in user"):
        chat({"messages": [{"role": "system", "content": [image_part("https://e.com/x.png")]}]})
    only_image = chat({"messages": [{"role": "user", "content": [image_part("https://e.com/y")]}]})
    assert only_image.images == 1  # no text at all is fine when there is an image


def test_native_pipeline_keeps_cloud_call_ids_and_does_not_parse_text() -> None:
    tools = [ToolSpec(name="get_weather")]
    plan = ChatPlan(
        api=ApiFlavor.OPENAI, model="m", messages=[Message(role="user", text="x")], tools=tools
    )
    native = EventPipeline(plan, native=True)
    emulated_text = f"{ACTION_FENCE_OPEN}\n{{}}"
    assert native.feed(Delta(id=1, text=emulated_text)) == [Delta(id=1, text=emulated_text)]
    call = ToolCall(id=1, call_id="call_cloud", name="get_weather", arguments_json="{}")
    [out] = native.feed(call)
    assert isinstance(out, ToolCall) and out.call_id == "call_cloud"
    assert native.feed(ToolCall(id=1, call_id="x", name="undeclared")) == []
    _tail, outcome = native.finish(None)
    assert outcome.finish_reason == "tool_calls"
    emulated = EventPipeline(plan)
    [renamed] = emulated.feed(call)
    assert isinstance(renamed, ToolCall) and renamed.call_id != "call_cloud"


def link(name: str, backend: Backend | None) -> WorkerLink:
    worker = WorkerLink(WorkerRef(name=name, socket_path=f"/tmp/{name}.sock"))
    if backend is not None:
        worker.pong = Pong(
            id=1,
            name=name,
            state=ChildState.READY,
            login=LoginState.LOGGED_IN,
            pid=1,
            backend=backend,
        )
    return worker


async def test_each_backend_gets_its_form_and_images_only_go_to_cloud() -> None:
    plan = chat(user_with(image_part("https://e.com/x.png")))
    plan.tools = [ToolSpec(name="t")]
    forms = RequestForms(plan, request_id="r", scope="s")
    deadline = asyncio.get_running_loop().time() + 30
    runtime = forms.for_backend(Backend.RUNTIME, deadline)
    cloud = forms.for_backend(Backend.CLOUD, deadline)
    assert runtime.messages and not runtime.turns
    assert cloud.turns and not cloud.messages and cloud.turns[0].images
    assert forms.for_backend(Backend.CLOUD, deadline) is cloud  # built once
    runtime_link, cloud_link = link("r", Backend.RUNTIME), link("c", Backend.CLOUD)
    assert forms.eligible([runtime_link, cloud_link], [runtime_link, cloud_link]) == [cloud_link]
    with pytest.raises(ApiError, match='backend = "cloud"') as caught:
        forms.eligible([runtime_link], [runtime_link, link("new", None)])
    assert caught.value.kind is ErrorKind.BAD_REQUEST
    text_only = RequestForms(
        chat({"messages": [{"role": "user", "content": "x"}]}),
        request_id="r",
        scope="s",
    )
    assert text_only.eligible([runtime_link], [runtime_link]) == [runtime_link]
