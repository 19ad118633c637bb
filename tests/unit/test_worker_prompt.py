"""Prompt flattening, think-fence splitting, token estimates."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.chat import ImageInput, Message
from worker.images import file_uri, prompt_images
from worker.prompt import flatten, has_content
from worker.think import Part, ThinkSplitter

pytestmark = pytest.mark.unit

FENCED = "\n````think::1234\nweighing options\n````\nThe answer is 42."
# A legacy agent-mode answer: the runtime's tool card between two sentences, then a think fence.
CARDED = (
    "Let me look.\n```toolCall::read_file::tc-9f::INIT\n```\nIt says hi."
    "\n````think::7\nfine\n````\nDone."
)


def test_transcript_layout_and_lone_user_message() -> None:
    messages = [
        Message(role="system", text="Be brief."),
        Message(role="user", text="hi"),
        Message(role="assistant", text="hello"),
        Message(role="user", text=" what now? "),
    ]
    assert flatten(messages) == "[system] Be brief.\n[user] hi\n[assistant] hello\n[user] what now?"
    assert flatten([Message(role="user", text=" only this ")]) == "only this"
    assert flatten([Message(role="system", text=""), Message(role="user", text="x")]) == "x"
    assert not has_content([Message(role="user", text="  ")])


def test_images_are_marked_where_they_were_sent_and_numbered_like_the_items() -> None:
    png, gif = ImageInput(media_type="image/png", data_b64="AA=="), ImageInput(data_b64="BB==")
    only_url = ImageInput(url="https://example.com/x.png")  # never reaches a runtime worker
    messages = [
        Message(role="user", text="first", images=[png]),
        Message(role="assistant", text="a cat"),
        Message(role="user", text="", images=[gif, only_url]),
    ]
    assert flatten(messages) == "[user] first\n[image 1]\n[assistant] a cat\n[user] [image 2]"
    assert prompt_images(messages) == [png, gif]
    assert flatten([Message(role="user", text="what?", images=[png])]) == "what?\n[image 1]"
    assert has_content([Message(role="user", text="", images=[png])])


def test_image_file_uris_are_escaped_as_go_query_escape_does() -> None:
    uri = file_uri("lingma", Path("/var/lib/lingma-gw/accounts/a b/images/r-1.png"))
    assert (
        uri
        == "lingma:///agent/file?path=%2Fvar%2Flib%2Flingma-gw%2Faccounts%2Fa+b%2Fimages%2Fr-1.png"
    )


def split_all(chunks: list[str]) -> list[tuple[Part, str]]:
    splitter = ThinkSplitter()
    parts = [p for chunk in chunks for p in splitter.feed(chunk)] + splitter.flush()
    merged: list[tuple[Part, str]] = []
    for part, text in parts:
        if merged and merged[-1][0] is part:
            merged[-1] = (part, merged[-1][1] + text)
        else:
            merged.append((part, text))
    return merged


def test_think_fence_becomes_reasoning() -> None:
    assert split_all([FENCED]) == [
        (Part.REASONING, "weighing options"),
        (Part.TEXT, "The answer is 42."),
    ]


@given(st.lists(st.integers(0, len(FENCED)), max_size=8))
def test_any_chunking_gives_the_same_split(cuts: list[int]) -> None:
    points = sorted(set(cuts))
    chunks = [FENCED[a:b] for a, b in zip([0, *points], [*points, len(FENCED)], strict=True)]
    assert split_all(chunks) == split_all([FENCED])


def test_tool_cards_are_dropped_and_the_rest_is_kept() -> None:
    assert split_all([CARDED]) == [
        (Part.TEXT, "Let me look.\nIt says hi."),
        (Part.REASONING, "fine"),
        (Part.TEXT, "Done."),
    ]
    unfinished = ["Working.\n```toolCall::run_in_terminal::t1::RUNNING"]
    assert split_all(unfinished) == [(Part.TEXT, "Working.\n")]


@given(st.lists(st.integers(0, len(CARDED)), max_size=10))
def test_any_chunking_drops_the_same_card(cuts: list[int]) -> None:
    points = sorted(set(cuts))
    chunks = [CARDED[a:b] for a, b in zip([0, *points], [*points, len(CARDED)], strict=True)]
    assert split_all(chunks) == split_all([CARDED])


def test_text_without_fences_passes_through_and_unclosed_fence_is_reasoning() -> None:
    assert split_all(["plain ```python\ncode\n```", " text\n"]) == [
        (Part.TEXT, "plain ```python\ncode\n```" + " text\n")
    ]
    assert split_all(["````think::5\nhalf a thought"]) == [(Part.REASONING, "half a thought")]
