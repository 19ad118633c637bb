"""Runs in the front (and is imported by the emulator): the text form of emulated tool calls.

Lingma's runtime only executes its own IDE tools, so client-defined tools are emulated in text
(lingma-protocol.md §9.2): the prompt tells the model to answer with fenced `json action`
blocks, and the front parses them back out of the stream. The emulator imports
`render_tool_call` so its scripted calls look exactly like what the instructions ask for.
"""

from __future__ import annotations

import json
from typing import Any

ACTION_FENCE_OPEN = "```json action"
FENCE_CLOSE = "```"


def render_tool_call(name: str, arguments: dict[str, Any]) -> str:
    """The exact text a well-behaved model writes to call `name` with `arguments`."""
    body = json.dumps({"tool": name, "parameters": arguments}, ensure_ascii=False)
    return f"{ACTION_FENCE_OPEN}\n{body}\n{FENCE_CLOSE}"
