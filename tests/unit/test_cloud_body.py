"""Unit: the cloud chat body (§14.7) — skeleton, structured history, native tools, images."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from protocol.chat import ChatTurn, PriorToolCall, ToolSpec
from protocol.worker_socket import ModelInfo
from worker.cloud.body import BodyInput, build_body

pytestmark = pytest.mark.unit

SKELETON = {
    "request_id", "request_set_id", "chat_record_id", "stream", "image_urls", "is_reply",
    "is_retry", "session_id", "code_language", "source", "version", "chat_prompt", "parameters",
    "aliyun_user_type", "agent_id", "task_id", "model_config", "messages", "business",
}  # fmt: skip
HISTORY = [
    ChatTurn(role="system", text="Be brief."),
    ChatTurn(role="user", text="Weather in Paris?"),
    ChatTurn(
        role="assistant",
        tool_calls=[PriorToolCall(call_id="call_1", name="get_weather", arguments_json='{"c":1}')],
    ),
    ChatTurn(role="tool", text="sunny", tool_call_id="call_1"),
    ChatTurn(role="user", text="And now?"),
]


def body(**fields: Any) -> dict[str, Any]:
    spec = BodyInput(**{"turns": HISTORY, "model_key": "kmodel", **fields})
    rid, raw = build_body(spec, request_id="ab" * 16)
    decoded: dict[str, Any] = msgspec.json.decode(raw)
    assert decoded["request_id"] == decoded["chat_record_id"] == rid
    return decoded


def test_skeleton_and_structured_history() -> None:
    decoded = body()
    assert set(decoded) == SKELETON  # no tools: no tools / tool_choice keys
    assert decoded["stream"] is True and decoded["version"] == "3" and decoded["source"] == 0
    assert decoded["agent_id"] == "agent_common" and decoded["task_id"] == "question_refine"
    assert decoded["parameters"] == {"temperature": 0.1} and decoded["image_urls"] is None
    messages = decoded["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "tool", "user"]
    call = messages[2]["tool_calls"][0]
    assert call == {
        "index": 0,
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"c":1}'},  # a JSON string
    }
    assert messages[3]["tool_call_id"] == "call_1" and messages[3]["content"] == "sunny"
    assert "tool_call_id" not in messages[1] and "response_meta" in messages[0]


def test_tools_choice_and_model_config() -> None:
    tools = [
        ToolSpec(name="a", parameters_json="{}"),
        ToolSpec(name="b", parameters_json='{"x":1}'),
    ]
    decoded = body(tools=tools, tool_choice="b")
    projected = [t["function"] for t in decoded["tools"]]
    assert projected[0]["parameters"] == {"type": "object", "properties": {}}  # LP's substitute
    assert projected[1]["parameters"] == {"x": 1}
    assert decoded["tool_choice"] == {"type": "function", "function": {"name": "b"}}
    assert body(tools=tools, tool_choice="required")["tool_choice"] == "required"
    assert "tool_choice" not in body(tools=tools)  # auto is left out, as LP does
    config = body(model_key="auto")["model_config"]
    assert config["key"] == config["model"] == "" and config["is_reasoning"] is False
    thinking = ModelInfo(key="t", display_name="Thinking", is_reasoning=True)
    assert body(model_key="t", model=thinking)["model_config"]["is_reasoning"] is True
    assert body(reasoning_effort="high")["model_config"]["is_reasoning"] is True
    assert body(temperature=0.7)["parameters"] == {"temperature": 0.7}


def test_images_go_as_uploaded_urls_and_parts() -> None:
    decoded = body(image_urls={4: ["https://cdn/x.png", "https://cdn/y.png"]})
    assert decoded["image_urls"] == ["https://cdn/x.png", "https://cdn/y.png"]
    assert decoded["model_config"]["is_vl"] is True
    last = decoded["messages"][4]
    assert last["content"] == "And now?"  # the string content stays (L2A)
    assert last["parts"][0] == {"type": "text", "text": "And now?"}
    assert last["parts"][2]["image_url"] == {"url": "https://cdn/y.png", "detail": "auto"}
    assert "parts" not in decoded["messages"][1]
