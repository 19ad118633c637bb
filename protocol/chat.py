"""Shared by front and worker: one chat as it travels front -> worker and back.

The front sends `ChatRequest` (and `Cancel` when its client leaves); the worker answers with
a stream of `ChatEvent`s that ends with exactly one `Finish` or `Failure`, all carrying the
request's integer `id`. The payload Structs (`Message`, `ChatTurn`, `ToolSpec`, ...) are the
conversation in the two forms the backends read: flattened text for the runtime, structured
turns for the cloud.
"""

from __future__ import annotations

import enum

from protocol.vocabulary import Base, ErrorCode


class FinishReason(enum.StrEnum):
    STOP = "stop"
    LENGTH = "length"
    TOOL_CALLS = "tool_calls"
    CANCELLED = "cancelled"
    CONTENT_FILTER = "content_filter"  # the runtime filtered the answer (chat/answer.isFiltered)


# --------------------------------------------------------------------------- chat payloads


class ImageInput(Base, frozen=True, kw_only=True):
    """One image a client sent, checked by the front.

    A runtime worker takes images with their bytes (ACP image prompt items); an image that is
    only a URL (the front does not fetch URLs unless configured to) can go to the cloud only.
    """

    media_type: str = ""  # image/png, image/jpeg, image/gif, image/webp
    data_b64: str = ""  # inline bytes, standard base64
    url: str = ""  # an http(s) URL the client gave instead of bytes


class Message(Base, frozen=True, kw_only=True):
    """One conversation turn, already flattened to text by the front."""

    role: str  # system | user | assistant | tool
    text: str
    name: str = ""
    images: list[ImageInput] = []  # user turns: the images sent with it (text may be empty)


class ToolSpec(Base, frozen=True, kw_only=True):
    """A client-defined function tool; the front emulates calling it over text."""

    name: str
    description: str = ""
    parameters_json: str = "{}"


class PriorToolCall(Base, frozen=True, kw_only=True):
    """A tool call an earlier assistant turn made, sent back to the cloud as it was."""

    call_id: str
    name: str
    arguments_json: str = "{}"


class ChatTurn(Base, frozen=True, kw_only=True):
    """One conversation turn kept structured (cloud backend): roles, tool calls, tool results.

    The runtime backend reads `ChatRequest.messages` (text); the cloud backend reads
    `ChatRequest.turns`, so tool calls and images travel natively instead of as prompt text.
    """

    role: str  # system | user | assistant | tool
    text: str = ""
    name: str = ""
    images: list[ImageInput] = []
    tool_calls: list[PriorToolCall] = []  # assistant turns
    tool_call_id: str = ""  # tool turns: the call this result answers


class Usage(Base, frozen=True, kw_only=True):
    prompt_tokens: int = 0
    completion_tokens: int = 0


# --------------------------------------------------------------------------- front -> worker


class ChatRequest(Base, tag_field="type", tag="chat", frozen=True, kw_only=True):
    id: int
    request_id: str  # the client's x-request-id, carried into every log line
    model: str
    messages: list[Message]
    tools: list[ToolSpec] = []
    tool_choice: str = "auto"  # auto | none | required | function name
    max_tokens: int | None = None
    stream: bool = True
    scope: str = ""  # hashed API key: session-cache entries never cross keys
    deadline: float = 0.0  # wall-clock epoch seconds; 0 = none given (the worker's own cap)
    # Cloud backend only: the conversation structured (`messages` may then be empty), and the
    # sampling hints the cloud body carries (lingma-protocol.md §14.7).
    turns: list[ChatTurn] = []
    temperature: float | None = None
    reasoning_effort: str = ""


class Cancel(Base, tag_field="type", tag="cancel", frozen=True, kw_only=True):
    id: int


# --------------------------------------------------------------------------- worker -> front


class Delta(Base, tag_field="type", tag="delta", frozen=True, kw_only=True):
    id: int
    text: str


class Reasoning(Base, tag_field="type", tag="reasoning", frozen=True, kw_only=True):
    id: int
    text: str


class ToolCall(Base, tag_field="type", tag="tool_call", frozen=True, kw_only=True):
    """A native tool call: the runtime's (ACP tool_call) or the cloud's (assembled fragments).

    Text-emulated client tools (runtime backend) are parsed by the front instead.
    """

    id: int
    call_id: str
    name: str
    arguments_json: str = "{}"


class Finish(Base, tag_field="type", tag="finish", frozen=True, kw_only=True):
    id: int
    reason: FinishReason = FinishReason.STOP
    usage: Usage = Usage()
    upstream_session: str = ""
    served_by: str = ""
    model: str = ""  # the Lingma model key actually used
    first_token_ms: float | None = None
    total_ms: float = 0.0
    session_reused: bool = False


class Failure(Base, tag_field="type", tag="failure", frozen=True, kw_only=True):
    """How a chat (or any request a child cannot serve) failed; `id` 0 for an undecodable frame."""

    id: int
    code: ErrorCode
    message: str
    retry_after: float | None = None
    served_by: str = ""
    # Nothing reached the caller and another account may well succeed (an upstream 5xx or a
    # stream cut before any output): the front tries the next worker.
    retryable: bool = False


ChatEvent = Delta | Reasoning | ToolCall | Finish | Failure
