"""Runs in the worker: the JSON body of one cloud chat request (§14.7).

The full LP/L2A skeleton (required fields are unknown, this set is known to work), structured
`messages` with assistant `tool_calls` (arguments as a JSON string) and `tool` results,
`tools` / `tool_choice` passed natively, `model_config` from the account's model entry.
Images follow L2A's route: uploaded first, their CDN URLs in `image_urls`, and each user
message that carried images keeps its string `content` and gains `parts` (text + image_url).
The body is serialized once; those bytes are signed and sent (§14.5).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from protocol.chat import ChatTurn, ToolSpec
from protocol.worker_socket import ModelInfo
from worker.cloud.signing import COSY_VERSION

AUTO_MODEL = "auto"
DEFAULT_TEMPERATURE = 0.1
EMPTY_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}}
_decode = msgspec.json.Decoder()


@dataclass(frozen=True)
class BodyInput:
    turns: Sequence[ChatTurn]
    model_key: str
    model: ModelInfo | None = None  # the account's entry for model_key, when it has one
    tools: Sequence[ToolSpec] = ()
    tool_choice: str = "auto"
    temperature: float | None = None
    reasoning_effort: str = ""
    image_urls: Mapping[int, Sequence[str]] | None = None  # turn index -> uploaded image URLs


def new_request_id() -> str:
    return uuid.uuid4().hex


def _response_meta() -> dict[str, Any]:
    return {"id": "", "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}}


def project_turn(turn: ChatTurn, image_urls: Sequence[str] = ()) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": turn.role,
        "content": turn.text,
        "response_meta": _response_meta(),
        "reasoning_content_signature": "",
    }
    if turn.name:
        message["name"] = turn.name
    if turn.role == "tool" and turn.tool_call_id:
        message["tool_call_id"] = turn.tool_call_id
    if turn.tool_calls:
        message["tool_calls"] = [
            {
                "index": index,
                "id": call.call_id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments_json or "{}"},
            }
            for index, call in enumerate(turn.tool_calls)
        ]
    if image_urls:
        message["parts"] = [
            {"type": "text", "text": turn.text},
            *(
                {"type": "image_url", "image_url": {"url": url, "detail": "auto"}}
                for url in image_urls
            ),
        ]
    return message


def _schema(parameters_json: str) -> Any:
    try:
        schema = _decode.decode(parameters_json) if parameters_json else {}
    except msgspec.DecodeError:
        schema = {}
    return schema if isinstance(schema, dict) and schema else EMPTY_SCHEMA


def project_tools(tools: Sequence[ToolSpec]) -> list[dict[str, Any]]:
    return [
        {
            "type": "function",
            "function": {
                "name": tool.name,
                "description": tool.description,
                "parameters": _schema(tool.parameters_json),
            },
        }
        for tool in tools
        if tool.name
    ]


def project_tool_choice(choice: str) -> Any:
    """LP's projection: auto is left out, none/required as strings, a name as an object."""
    if choice in ("", "auto"):
        return None
    if choice in ("none", "required"):
        return choice
    return {"type": "function", "function": {"name": choice}}


def model_config(
    key: str, model: ModelInfo | None, *, images: bool, reasoning: bool
) -> dict[str, Any]:
    """L2A's full field set; `key` "" lets the cloud choose (what LP and L2A send for auto)."""
    wire_key = "" if key.lower() == AUTO_MODEL else key
    return {
        "key": wire_key,
        "display_name": model.display_name if model else "",
        "model": wire_key,
        "format": "",
        "is_vl": images,
        "is_reasoning": reasoning,
        "api_key": "",
        "url": "",
        "source": "",
        "max_input_tokens": 0,
        "enable": False,
        "price_factor": 0,
        "original_price_factor": 0,
        "is_default": False,
        "is_new": False,
        "exclude_tags": None,
        "tags": None,
        "icon": None,
        "strategies": None,
    }


def build_body(spec: BodyInput, *, request_id: str | None = None) -> tuple[str, bytes]:
    """(request id, the exact body bytes to sign and send)."""
    rid = request_id or new_request_id()
    images = dict(spec.image_urls or {})
    all_urls = [url for index in sorted(images) for url in images[index]]
    reasoning = bool(spec.reasoning_effort) or bool(spec.model and spec.model.is_reasoning)
    payload: dict[str, Any] = {
        "request_id": rid,
        "request_set_id": "",
        "chat_record_id": rid,
        "stream": True,
        "image_urls": all_urls or None,
        "is_reply": False,
        "is_retry": False,
        "session_id": "",
        "code_language": "",
        "source": 0,
        "version": "3",
        "chat_prompt": "",
        "parameters": {
            "temperature": DEFAULT_TEMPERATURE if spec.temperature is None else spec.temperature
        },
        "aliyun_user_type": "personal_standard",
        "agent_id": "agent_common",
        "task_id": "question_refine",
        "model_config": model_config(
            spec.model_key, spec.model, images=bool(all_urls), reasoning=reasoning
        ),
        "messages": [
            project_turn(turn, images.get(index, ())) for index, turn in enumerate(spec.turns)
        ],
        "business": {
            "product": "jb_plugin",
            "version": COSY_VERSION,
            "type": "memory",
            "id": str(uuid.uuid4()),
            "begin_at": int(time.time() * 1000),
            "stage": "start",
            "name": f"memory_intent_recognition_{rid}",
        },
    }
    tools = project_tools(spec.tools)
    if tools:
        payload["tools"] = tools
        choice = project_tool_choice(spec.tool_choice)
        if choice is not None:
            payload["tool_choice"] = choice
    return rid, msgspec.json.encode(payload)
