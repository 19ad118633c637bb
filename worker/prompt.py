"""Runs in the worker: turning a conversation into Lingma's single `questionText` string.

Lingma takes one prompt string per ask (lingma-protocol.md §6.11), so the history is flattened
into a transcript, one `[role] text` section per message, as the reference gateway did. On a
session-cache hit only the latest turn goes upstream: the runtime already holds the rest.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from protocol.messages import Message

_CJK = re.compile(r"[\u3000-\u9fff\uac00-\ud7af\uff00-\uffef]")


def flatten(messages: Sequence[Message]) -> str:
    """`[system] ...\\n[user] ...\\n[assistant] ...`; a lone user message goes as its bare text."""
    meaningful = [m for m in messages if m.text.strip()]
    if len(meaningful) == 1 and meaningful[0].role == "user":
        return meaningful[0].text.strip()
    return "\n".join(f"[{m.role}] {m.text.strip()}" for m in meaningful).strip()


def has_text(messages: Sequence[Message]) -> bool:
    return any(m.text.strip() for m in messages)


def estimate_tokens(text: str) -> int:
    """Rough count for usage reporting: one token per CJK character, else ~4 characters."""
    if not text:
        return 0
    cjk = len(_CJK.findall(text))
    return cjk + max(1, (len(text) - cjk + 3) // 4) if len(text) > cjk else cjk


def estimate_messages_tokens(messages: Sequence[Message]) -> int:
    return sum(estimate_tokens(m.text) for m in messages)
