"""Runs in the front: msgspec Structs for OpenAI request bodies (Chat Completions and Responses).

Only what the gateway reads is typed; every other field a client may send is accepted and
ignored (msgspec skips unknown fields), so new SDK versions do not break on extra options.
"""

from __future__ import annotations

from typing import Any

import msgspec


class _Body(msgspec.Struct, kw_only=True):
    """Base of every request body struct."""


# --------------------------------------------------------------------------- chat completions


class ImageUrl(_Body, kw_only=True):
    url: str
    detail: str | None = None


class ContentPart(_Body, kw_only=True):
    type: str
    text: str | None = None
    image_url: ImageUrl | str | None = None  # an object in chat; some clients send the string


Content = str | list[ContentPart] | None


class FunctionCallIn(_Body, kw_only=True):
    name: str
    arguments: str = ""


class ToolCallIn(_Body, kw_only=True):
    id: str = ""
    type: str = "function"
    function: FunctionCallIn


class ChatMessageIn(_Body, kw_only=True):
    role: str
    content: Content = None
    name: str | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: str | None = None
    function_call: FunctionCallIn | None = None  # legacy functions API


class FunctionDef(_Body, kw_only=True):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None


class ToolDef(_Body, kw_only=True):
    type: str = "function"
    function: FunctionDef | None = None


class NamedFunction(_Body, kw_only=True):
    name: str


class ToolChoiceObject(_Body, kw_only=True):
    type: str = "function"
    function: NamedFunction | None = None


class StreamOptions(_Body, kw_only=True):
    include_usage: bool = False


class ChatCompletionsBody(_Body, kw_only=True):
    messages: list[ChatMessageIn]
    model: str = ""
    stream: bool = False
    stream_options: StreamOptions | None = None
    tools: list[ToolDef] | None = None
    tool_choice: str | ToolChoiceObject | None = None
    functions: list[FunctionDef] | None = None  # legacy
    function_call: str | NamedFunction | None = None  # legacy
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    reasoning_effort: str | None = None
    n: int | None = None
    stop: str | list[str] | None = None
    user: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    seed: int | None = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None


# --------------------------------------------------------------------------- responses


class ResponsesContentPart(_Body, kw_only=True):
    type: str
    text: str | None = None
    image_url: str | None = None  # input_image: a data URL or an http(s) URL
    file_id: str | None = None


ResponsesContent = str | list[ResponsesContentPart] | None


class InputItem(_Body, kw_only=True):
    """One input item: a message, a function_call, a function_call_output, or other (ignored)."""

    type: str = "message"
    role: str = ""
    content: ResponsesContent = None
    call_id: str = ""
    name: str = ""
    arguments: str = ""
    output: ResponsesContent = None


class ResponsesTool(_Body, kw_only=True):
    type: str
    name: str = ""
    description: str | None = None
    parameters: dict[str, Any] | None = None


class ResponsesToolChoice(_Body, kw_only=True):
    type: str
    name: str = ""


class ResponsesBody(_Body, kw_only=True):
    input: str | list[InputItem]
    model: str = ""
    instructions: str | None = None
    tools: list[ResponsesTool] | None = None
    tool_choice: str | ResponsesToolChoice | None = None
    stream: bool = False
    max_output_tokens: int | None = None
    previous_response_id: str | None = None
    user: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    parallel_tool_calls: bool | None = None
    metadata: dict[str, Any] | None = None
    store: bool | None = None
    reasoning: dict[str, Any] | None = None
