"""Runs in the front: msgspec Structs for Anthropic Messages request bodies.

Unknown fields are accepted and ignored, so Claude Code and newer SDKs can send options the
gateway has no use for (cache_control, betas, container, ...) without a 400.
"""

from __future__ import annotations

from typing import Any

import msgspec


class _Body(msgspec.Struct, kw_only=True):
    """Base of every request body struct."""


class ImageSource(_Body, kw_only=True):
    type: str = ""  # base64 | url
    media_type: str | None = None
    data: str | None = None
    url: str | None = None


class Block(_Body, kw_only=True):
    """Any content block; `type` says which of the optional fields matter."""

    type: str
    text: str | None = None
    id: str | None = None
    name: str | None = None
    input: Any = None
    tool_use_id: str | None = None
    content: str | list[Block] | None = None
    is_error: bool | None = None
    thinking: str | None = None
    source: ImageSource | None = None


class MessageIn(_Body, kw_only=True):
    role: str
    content: str | list[Block]


class Tool(_Body, kw_only=True):
    name: str
    description: str | None = None
    input_schema: dict[str, Any] | None = None
    type: str | None = None  # None/"custom" for client tools; server tools carry a versioned type


class ToolChoice(_Body, kw_only=True):
    type: str = "auto"  # auto | any | tool | none
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class Metadata(_Body, kw_only=True):
    user_id: str | None = None


class MessagesBody(_Body, kw_only=True):
    messages: list[MessageIn]
    model: str = ""
    max_tokens: int | None = None
    system: str | list[Block] | None = None
    stop_sequences: list[str] | None = None
    stream: bool = False
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    metadata: Metadata | None = None
    thinking: dict[str, Any] | None = None
