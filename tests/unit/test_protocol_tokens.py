"""The one token estimate: CJK aware, incremental, and the same for a prompt wherever counted."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from front.errors import ApiFlavor
from front.limits import LimitHit, OutputLimiter
from front.pipeline import EventPipeline
from front.plan import ChatPlan
from protocol.chat import Delta, Message
from protocol.tokens import TokenCount, estimate_messages_tokens, estimate_tokens

pytestmark = pytest.mark.unit

FULLWIDTH = "\uff0c\u3002\uff21"  # full-width comma, ideographic full stop, full-width A
ALPHABET = "ab 1.\n你好世界こんにちは한국어" + FULLWIDTH
MIXED = st.text(alphabet=st.sampled_from(ALPHABET), max_size=60)


def test_latin_text_is_four_characters_per_token_rounded_up() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("abcd" * 10) == 10
    assert estimate_tokens("abcde") == 2


def test_each_cjk_character_is_one_token() -> None:
    assert estimate_tokens("你好世界") == 4  # Han
    assert estimate_tokens("こんにちは") == 5  # kana
    assert estimate_tokens("한국어") == 3  # Hangul
    assert estimate_tokens(FULLWIDTH) == 3  # CJK punctuation and full-width forms
    assert estimate_tokens("你好 abcd") == 2 + 2  # two Han, then " abcd" = 5 others


def test_a_prompt_counts_each_message_and_sums() -> None:
    messages = [Message(role="system", text="abcde"), Message(role="user", text="你好")]
    assert estimate_messages_tokens(messages) == 2 + 2


@given(st.lists(MIXED, max_size=8))
def test_counting_in_pieces_equals_counting_the_whole(pieces: list[str]) -> None:
    count = TokenCount()
    for piece in pieces:
        count.add(piece)
    assert count.tokens == estimate_tokens("".join(pieces))


@given(MIXED, MIXED, st.integers(min_value=0, max_value=20))
def test_fitting_prefix_is_the_longest_prefix_within_the_budget(
    before: str, text: str, budget: int
) -> None:
    count = TokenCount()
    count.add(before)
    size = count.fitting_prefix(text, budget)
    if count.tokens > budget:
        assert size == 0
        return
    assert estimate_tokens(before + text[:size]) <= budget
    if size < len(text):
        assert estimate_tokens(before + text[: size + 1]) > budget


def test_the_token_budget_counts_cjk_characters_as_tokens() -> None:
    limiter = OutputLimiter([], max_tokens=3)
    assert limiter.feed("你好世界再见") == "你好世"
    assert limiter.hit is LimitHit.LENGTH


def test_a_reply_cut_by_max_tokens_reports_at_most_max_tokens() -> None:
    plan = ChatPlan(
        api=ApiFlavor.ANTHROPIC,
        model="m",
        messages=[Message(role="user", text="说点什么")],
        max_tokens=5,
    )
    pipeline = EventPipeline(plan)
    visible = pipeline.feed(Delta(id=1, text="这是一个很长的中文回答"))
    _, outcome = pipeline.finish(None)
    assert "".join(e.text for e in visible if isinstance(e, Delta)) == "这是一个很"
    assert (outcome.finish_reason, outcome.completion_tokens) == ("length", 5)
    assert outcome.prompt_tokens == plan.prompt_tokens == 4
