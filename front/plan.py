"""Runs in the front: the API-neutral form of one chat request, and how each API builds it.

OpenAI chat, Responses and Anthropic Messages all become a `ChatPlan` (flattened messages for
runtime-backend workers, structured turns for cloud-backend ones, tools, limits) through one
skeleton, `build_plan`, fed by each API's `Translation` (its body type and the parts that read
it). The relay and the event pipeline work on plans only, so every API gets the same
admission, routing, retries, tool handling and limits. `RequestMeta` is what the request
carries beside its plan: ids, key scope, affinity, deadline, its named key and limits ticket,
and who answered it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from front.errors import ApiError, ApiFlavor, ErrorKind
from front.keys import Ticket
from front.routing import affinity_source
from front.tools import tool_instructions
from front.turns import image_count, require_content
from protocol.chat import ChatTurn, Message, ToolSpec
from protocol.keys import KeyEntry
from protocol.tokens import estimate_messages_tokens
from protocol.vocabulary import Backend

MAX_STOP_SEQUENCES = 16
B = TypeVar("B")


@dataclass(slots=True)
class ChatPlan:
    api: ApiFlavor
    model: str
    messages: list[Message]
    tools: list[ToolSpec] = field(default_factory=list)
    tool_choice: str = "auto"  # auto | none | required | a tool name
    max_tokens: int | None = None
    stop: list[str] = field(default_factory=list)
    stream: bool = False
    include_usage: bool = False
    affinity_source: str = ""
    call_id_prefix: str = "call_"
    turns: list[ChatTurn] = field(default_factory=list)  # structured, for cloud workers
    temperature: float | None = None
    reasoning_effort: str = ""

    @property
    def prompt_tokens(self) -> int:
        """The prompt's estimate: what count_tokens, message_start and the worker's usage say."""
        return estimate_messages_tokens(self.messages)

    @property
    def images(self) -> int:
        return image_count(self.turns)

    @property
    def parses_tools(self) -> bool:
        return bool(self.tools) and self.tool_choice != "none"

    @property
    def forced_tool(self) -> str | None:
        if self.tool_choice in ("auto", "none", "required"):
            return None
        return self.tool_choice


@dataclass(slots=True)
class RequestMeta:
    """One chat request's own facts beside its plan; the relay fills in who answered."""

    request_id: str
    scope: str  # the API key's scope: session-cache and affinity partitions
    affinity: str
    deadline: float | None  # event-loop time; None: no total cap (front/chat_entry.py)
    started: float  # event-loop time
    served_by: str = ""
    backend: Backend = Backend.RUNTIME  # of the worker that answers
    key: KeyEntry | None = None  # the named key (None in open mode)
    ticket: Ticket | None = None  # counted against the key's host-wide limits until settled


@dataclass(frozen=True, slots=True)
class Options:
    """What a body asks for besides the conversation and its tools."""

    model: str | None
    max_tokens: int | None
    stream: bool
    stop: list[str] = field(default_factory=list)
    include_usage: bool = False
    user: str | None = None  # a conversation hint for the affinity
    temperature: float | None = None
    reasoning_effort: str = ""


def _accept(_body: object) -> None:
    return None


@dataclass(frozen=True, slots=True)
class Translation(Generic[B]):
    """One API's request body and the parts that read it; `build_plan` puts them together."""

    api: ApiFlavor
    body_type: type[B]
    call_id_prefix: str
    messages: Callable[[B], list[Message]]  # flattened, tool calls and results as text
    turns: Callable[[B], list[ChatTurn]]  # structured, images included
    tools: Callable[[B], list[ToolSpec]]
    tool_choice: Callable[[B, list[ToolSpec]], str]
    options: Callable[[B], Options]
    refuse: Callable[[B], None] = _accept  # 400 for what the gateway does not do at all

    def plan(self, body: B, *, default_model: str, affinity_header: str | None) -> ChatPlan:
        return build_plan(self, body, default_model=default_model, affinity_header=affinity_header)


def build_plan(
    translation: Translation[B], body: B, *, default_model: str, affinity_header: str | None
) -> ChatPlan:
    translation.refuse(body)
    messages = translation.messages(body)
    turns = translation.turns(body)
    require_content(messages, turns)
    tools = translation.tools(body)
    choice = translation.tool_choice(body, tools)
    system, first = first_texts(messages)
    options = translation.options(body)
    return ChatPlan(
        api=translation.api,
        model=options.model or default_model,
        messages=with_tool_instructions(messages, tools, choice),
        tools=tools,
        tool_choice=choice,
        max_tokens=options.max_tokens,
        stop=options.stop,
        stream=options.stream,
        include_usage=options.include_usage,
        affinity_source=affinity_source(
            header=affinity_header, user=options.user, system_text=system, first_text=first
        ),
        call_id_prefix=translation.call_id_prefix,
        turns=turns,
        temperature=options.temperature,
        reasoning_effort=options.reasoning_effort,
    )


def bad_request(message: str, param: str | None = None) -> ApiError:
    return ApiError(ErrorKind.BAD_REQUEST, message, param=param)


def tool_choice_word(choice: str, tools: Sequence[ToolSpec]) -> str:
    """A tool_choice given as a word, as both OpenAI APIs take it: auto | none | required."""
    if choice not in ("auto", "none", "required"):
        raise bad_request(f"unknown tool_choice {choice!r}", "tool_choice")
    return check_tool_choice(choice, tools)


def check_tool_choice(choice: str, tools: Sequence[ToolSpec]) -> str:
    if choice in ("auto", "none"):
        return choice
    if not tools:
        raise bad_request(f"tool_choice {choice!r} needs at least one tool", "tool_choice")
    if choice != "required" and choice not in {t.name for t in tools}:
        raise bad_request(f"tool_choice names an undeclared tool: {choice!r}", "tool_choice")
    return choice


def normalize_stop(stop: str | Sequence[str] | None) -> list[str]:
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else list(stop)
    if len(stops) > MAX_STOP_SEQUENCES:
        raise bad_request(f"at most {MAX_STOP_SEQUENCES} stop sequences are allowed", "stop")
    return [s for s in stops if s]


def check_max_tokens(value: int | None, param: str) -> int | None:
    if value is not None and value < 1:
        raise bad_request(f"{param} must be at least 1", param)
    return value


def with_tool_instructions(
    messages: list[Message], tools: Sequence[ToolSpec], choice: str
) -> list[Message]:
    """Insert the tool instructions as a system message after the client's own system ones."""
    if not tools or choice == "none":
        return messages
    note = Message(role="system", text=tool_instructions(tools, choice))
    leading = 0
    while leading < len(messages) and messages[leading].role == "system":
        leading += 1
    return [*messages[:leading], note, *messages[leading:]]


def first_texts(messages: Sequence[Message]) -> tuple[str | None, str | None]:
    """(system text, first non-system text): the fallback affinity signals."""
    system = "\n".join(m.text for m in messages if m.role == "system") or None
    first = next((m.text for m in messages if m.role != "system" and m.text), None)
    return system, first
