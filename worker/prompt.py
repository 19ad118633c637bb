"""Runs in the worker: turning a conversation into Lingma's single `questionText` string.

Lingma takes one prompt string per ask (lingma-protocol.md §6.11), so the history is flattened
into a transcript, one `[role] text` section per message, as the reference gateway did. On a
session-cache hit only the latest turn goes upstream: the runtime already holds the rest.
"""

from __future__ import annotations

from collections.abc import Sequence

from protocol.chat import Message


def flatten(messages: Sequence[Message]) -> str:
    """`[system] ...\\n[user] ...\\n[assistant] ...`; a lone user message goes as its bare text."""
    meaningful = [m for m in messages if m.text.strip()]
    if len(meaningful) == 1 and meaningful[0].role == "user":
        return meaningful[0].text.strip()
    return "\n".join(f"[{m.role}] {m.text.strip()}" for m in meaningful).strip()


def has_text(messages: Sequence[Message]) -> bool:
    return any(m.text.strip() for m in messages)
