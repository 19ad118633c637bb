"""Runs in the front: the API-neutral form of one chat request, built by each API's translator.

OpenAI chat, Responses and Anthropic Messages all become a `ChatPlan` (flattened messages for
runtime-backend workers, structured turns for cloud-backend ones, tools, limits); the relay and
the event pipeline work on plans only, so every API gets the same admission, routing, retries,
tool handling and limits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from front.errors import ApiError, ApiFlavor, ErrorKind
from front.tools import tool_instructions
from front.turns import image_count
from protocol.chat import ChatTurn, Message, ToolSpec
from protocol.tokens import estimate_messages_tokens

MAX_STOP_SEQUENCES = 16


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


def bad_request(message: str, param: str | None = None) -> ApiError:
    return ApiError(ErrorKind.BAD_REQUEST, message, param=param)


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


def require_messages(messages: list[Message]) -> list[Message]:
    if not any(m.text for m in messages):
        raise bad_request("messages is empty", "messages")
    return messages


def first_texts(messages: Sequence[Message]) -> tuple[str | None, str | None]:
    """(system text, first non-system text): the fallback affinity signals."""
    system = "\n".join(m.text for m in messages if m.role == "system") or None
    first = next((m.text for m in messages if m.role != "system" and m.text), None)
    return system, first
