"""Runs in the front: the structured conversation (`ChatTurn`s) a cloud-backend worker reads.

Each translator builds two forms of the same conversation: flattened text with the tool
instructions (`ChatPlan.messages`, for runtime-backend workers) and these structured turns —
roles kept apart, assistant tool calls and tool results as they were, images, no tool
instructions (for cloud-backend workers, which pass tools natively). The relay sends each worker
the form its backend reads, so a retry on an account of the other backend still works.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from front.errors import ApiError, ErrorKind
from protocol.chat import ChatTurn, ImageInput, Message, PriorToolCall

_encode = msgspec.json.Encoder().encode


def arguments_text(arguments: Any) -> str:
    """A prior call's arguments as the JSON string the cloud expects (§14.7)."""
    if isinstance(arguments, str):
        return arguments or "{}"
    return _encode(arguments if arguments is not None else {}).decode()


def prior_call(call_id: str, name: str, arguments: Any) -> PriorToolCall:
    return PriorToolCall(call_id=call_id, name=name, arguments_json=arguments_text(arguments))


def user_turn(text: str, images: Sequence[ImageInput], name: str = "") -> ChatTurn | None:
    if not text and not images:
        return None
    return ChatTurn(role="user", text=text, name=name, images=list(images))


def merged_assistant_turns(turns: list[ChatTurn]) -> list[ChatTurn]:
    """Consecutive assistant items (text, then function calls) are one assistant turn."""
    out: list[ChatTurn] = []
    for turn in turns:
        previous = out[-1] if out else None
        if previous is not None and turn.role == previous.role == "assistant":
            text = "\n\n".join(t for t in (previous.text, turn.text) if t)
            calls = [*previous.tool_calls, *turn.tool_calls]
            out[-1] = ChatTurn(role="assistant", text=text, tool_calls=calls)
        else:
            out.append(turn)
    return out


def image_count(turns: Sequence[ChatTurn]) -> int:
    return sum(len(t.images) for t in turns)


def url_images(turns: Sequence[ChatTurn]) -> int:
    """Images that are only a URL (no bytes): the runtime cannot take them."""
    return sum(1 for t in turns for image in t.images if not image.data_b64)


def require_content(messages: Sequence[Message], turns: Sequence[ChatTurn]) -> None:
    """400 unless the conversation has some text or an image."""
    if not any(m.text for m in messages) and not image_count(turns):
        raise ApiError(ErrorKind.BAD_REQUEST, "messages is empty", param="messages")
