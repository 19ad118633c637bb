"""Runs in the front (and is imported by the emulator): the text form of emulated tool calls.

Lingma's runtime only executes its own IDE tools, so client-defined tools are emulated in text
(lingma-protocol.md §9.2): the prompt tells the model to answer with fenced `json action`
blocks, and the front parses them back out of the stream. The emulator imports
`render_tool_call` so its scripted calls look exactly like what the instructions ask for.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from protocol.chat import ToolSpec

ACTION_FENCE_OPEN = "```json action"
FENCE_CLOSE = "```"

# Fence info strings under which a model may put a tool call (lower-cased, spaces collapsed).
TOOL_FENCE_INFOS = frozenset(
    {"", "json", "json action", "action", "jsonc", "json5", "tool", "tool_call", "tool_code"}
)
_NAME_KEYS = ("tool", "name", "tool_name", "function")
_ARG_KEYS = ("parameters", "arguments", "input", "args", "params")
_NAME_FORM_KEYS = frozenset({"name", "arguments", "parameters", "input", "id", "type", "call_id"})


def render_tool_call(name: str, arguments: dict[str, Any]) -> str:
    """The exact text a well-behaved model writes to call `name` with `arguments`."""
    body = json.dumps({"tool": name, "parameters": arguments}, ensure_ascii=False)
    return f"{ACTION_FENCE_OPEN}\n{body}\n{FENCE_CLOSE}"


@dataclass(frozen=True, slots=True)
class ParsedCall:
    name: str
    arguments: dict[str, Any]


def tool_instructions(tools: Sequence[ToolSpec], choice: str) -> str:
    """The system-prompt text that teaches the model our tool-call format."""
    lines = [
        "You can call the following tools (functions) to help answer.",
        "",
        "Available tools:",
    ]
    for tool in tools:
        lines.append(f"- {tool.name}: {tool.description or '(no description)'}")
        lines.append(f"  parameters (JSON Schema): {tool.parameters_json}")
    example = render_tool_call("TOOL_NAME", {"arg": "value"})
    lines += [
        "",
        "To call a tool, reply with a fenced block exactly in this form, one block per call",
        "(several blocks are allowed when calls are independent):",
        "",
        example,
        "",
        "Put only the JSON object inside the block, with the tool's arguments under",
        '"parameters". After the block(s) stop writing: the results come back in the next',
        "message. If no tool is needed, answer normally without any block.",
    ]
    if choice == "required":
        lines.append("You MUST call at least one tool in this reply.")
    elif choice not in ("auto", "none"):
        lines.append(f"You MUST call the tool `{choice}` in this reply.")
    return "\n".join(lines)


def forced_call_instruction(choice: str) -> str:
    """The stricter instruction for the one retry after a reply that should have been a call.

    Worded after lingma-proxy's ForceToolingPrompt (its docs/tool-emulation-methodology.md):
    procedural, names the format, forbids explanations and "tools are unavailable" refusals.
    """
    target = "the most appropriate of the available tools" if choice == "required" else choice
    return (
        "Your last reply did not call a tool, but this request requires a tool call. "
        f"Call {target} now: reply with only the fenced {ACTION_FENCE_OPEN} block(s), exactly in "
        "the format described above, with the arguments the tool's JSON Schema asks for. "
        "Do not explain and do not say that tools are unavailable: output the block directly."
    )


def render_tool_result(call_id: str, name: str, content: str, *, is_error: bool = False) -> str:
    """A tool's result in a later turn, folded back into text for the model."""
    label = "Tool error" if is_error else "Tool result"
    who = f"{name} (call {call_id})" if name else f"call {call_id}"
    return f"{label} for {who}:\n{content}\n\nAnswer now, or call another tool."


def render_assistant_turn(text: str, calls: Iterable[ParsedCall]) -> str:
    """An earlier assistant turn with its tool calls, in the format the model was taught."""
    parts = [text] if text else []
    parts += [render_tool_call(c.name, c.arguments) for c in calls]
    return "\n\n".join(parts)


def arguments_from_json(raw: str) -> dict[str, Any]:
    """Decode a client's `arguments` JSON string; anything but an object becomes {"value": ...}."""
    if not raw.strip():
        return {}
    try:
        value = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return {"raw": raw}
    return value if isinstance(value, dict) else {"value": value}


def _normal(name: str) -> str:
    name = name.strip().lower()
    name = name.removeprefix("functions.")
    return re.sub(r"[^a-z0-9]", "", name)


class ToolNames:
    """Matches a name a model wrote against the declared tools, forgiving case and separators."""

    __slots__ = ("_fuzzy", "exact")

    def __init__(self, names: Iterable[str]) -> None:
        self.exact = set(names)
        self._fuzzy = {_normal(n): n for n in self.exact}

    def match(self, name: str) -> str | None:
        if name in self.exact:
            return name
        return self._fuzzy.get(_normal(name))


NO_TOOLS = ToolNames(())  # shared by every chat without tools: nothing mutates a ToolNames


def _call_from_object(obj: dict[str, Any], names: ToolNames) -> ParsedCall | None:
    function = obj.get("function")
    if isinstance(function, dict):  # OpenAI style {"type": "function", "function": {...}}
        obj = function
    name = next((obj[k] for k in _NAME_KEYS if isinstance(obj.get(k), str)), None)
    if name is None:
        return None
    if "tool" not in obj and not set(obj) <= _NAME_FORM_KEYS:
        return None  # {"name": ..., "age": ...} is data, not a call
    args: Any = next((obj[k] for k in _ARG_KEYS if k in obj), None)
    if isinstance(args, str):
        try:
            args = msgspec.json.decode(args)
        except msgspec.DecodeError:
            return None
    if args is None:
        args = {}
    canonical = names.match(name)
    if canonical is None or not isinstance(args, dict):
        return None
    return ParsedCall(canonical, args)


def calls_from_json(text: str, names: ToolNames) -> list[ParsedCall] | None:
    """Tool calls in a JSON text (one object, a list, or {"tool_calls": [...]}) or None."""
    try:
        value = msgspec.json.decode(text.strip())
    except msgspec.DecodeError:
        return None
    if isinstance(value, dict) and isinstance(value.get("tool_calls"), list):
        value = value["tool_calls"]
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(item, dict) for item in items):
        return None
    calls = [_call_from_object(item, names) for item in items]
    if any(call is None for call in calls):
        return None
    return [call for call in calls if call is not None]
