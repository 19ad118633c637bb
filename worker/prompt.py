"""Runs in the worker: turning a conversation into Lingma's single `questionText` string.

Lingma takes one prompt string per ask (lingma-protocol.md §6.11), so the history is flattened
into a transcript, one `[role] text` section per message, as the reference gateway did. On a
session-cache hit only the latest turn goes upstream: the runtime already holds the rest.
Images go beside the text as prompt items (worker/images.py); the transcript marks where each
one was sent (`[image 1]`, numbered in the order of the items), so a model that sees several
turns' images can tell which turn sent which.
"""

from __future__ import annotations

from collections.abc import Sequence

from protocol.chat import Message


def flatten(messages: Sequence[Message]) -> str:
    """`[system] ...\\n[user] ...\\n[assistant] ...`; a lone user message goes as its bare text."""
    texts = _marked(messages)
    meaningful = [(m, text) for m, text in zip(messages, texts, strict=True) if text]
    if len(meaningful) == 1 and meaningful[0][0].role == "user":
        return meaningful[0][1]
    return "\n".join(f"[{m.role}] {text}" for m, text in meaningful).strip()


def _marked(messages: Sequence[Message]) -> list[str]:
    """Each message's text, followed by a mark per image it carries."""
    texts: list[str] = []
    number = 0
    for message in messages:
        marks = []
        for image in message.images:
            if image.data_b64:
                number += 1
                marks.append(f"[image {number}]")
        texts.append("\n".join(part for part in (message.text.strip(), " ".join(marks)) if part))
    return texts


def has_content(messages: Sequence[Message]) -> bool:
    """Some text, or an image, to ask about."""
    return any(m.text.strip() or m.images for m in messages)
