"""Shared by front and worker: the one token estimate behind every usage number we report.

The runtime reports no token counts for a chat (lingma-protocol.md §5.3/§5.4 carry none we
can rely on), so usage is estimated, and it must be the same estimate everywhere: Claude Code
compares `/v1/messages/count_tokens` with the `message_start` and final usage of the reply, and
two different counts for one prompt make its context accounting drift. The rule: a CJK
character (CJK punctuation, kana, Han, Hangul, full-width forms) is one token, any other text
one token per 4 characters, rounded up. A message list counts each message separately and sums,
so the worker (which sees `ChatRequest.messages`) and the front (which built them) agree.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from protocol.chat import Message

CHARS_PER_TOKEN = 4
_CJK = re.compile(r"[\u3000-\u9fff\uac00-\ud7af\uff00-\uffef]")


def _cjk_chars(text: str) -> int:
    # ASCII text (most of it) skips the regex: isascii() is a single C pass.
    return 0 if text.isascii() else len(_CJK.findall(text))


def _tokens(cjk: int, other: int) -> int:
    return cjk + -(-other // CHARS_PER_TOKEN)


class TokenCount:
    """A running estimate over text that arrives in pieces (a streamed reply)."""

    __slots__ = ("cjk", "other")

    def __init__(self) -> None:
        self.cjk = 0
        self.other = 0

    @property
    def tokens(self) -> int:
        return _tokens(self.cjk, self.other)

    def add(self, text: str) -> None:
        cjk = _cjk_chars(text)
        self.cjk += cjk
        self.other += len(text) - cjk

    def fitting_prefix(self, text: str, budget: int) -> int:
        """How many leading characters of `text` can be added without passing `budget` tokens."""
        text_cjk = _cjk_chars(text)
        if _tokens(self.cjk + text_cjk, self.other + len(text) - text_cjk) <= budget:
            return len(text)
        cjk, other = self.cjk, self.other
        for index, char in enumerate(text):
            if _CJK.match(char):
                cjk += 1
            else:
                other += 1
            if _tokens(cjk, other) > budget:
                return index
        return len(text)


def estimate_tokens(text: str) -> int:
    count = TokenCount()
    count.add(text)
    return count.tokens


def estimate_messages_tokens(messages: Iterable[Message]) -> int:
    """The prompt's count: the sum over its messages (what count_tokens and usage both report)."""
    return sum(estimate_tokens(m.text) for m in messages)
