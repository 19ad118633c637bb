"""Runs in the front: the incremental parser that pulls emulated tool calls out of streamed text.

Text is passed on as soon as it cannot be the start of a tool call. What might be one is held:
a fence opener (```` ``` ````) until its closing fence, a bare object (`{"`) until its braces
balance. A held candidate that turns out to be a call becomes a `ParsedCall`; anything else
(other JSON, a code block, an unterminated fence at the end) is released unchanged as text.
Code fences in another language stream through without being held.
"""

from __future__ import annotations

import enum
import re

from front.tools import TOOL_FENCE_INFOS, ParsedCall, ToolNames, calls_from_json

Segment = str | ParsedCall

_CANDIDATE = re.compile(r"[`{]")
_JSON_TOKEN = re.compile(r'[{}"\\]')
_SPACES = re.compile(r"\s*")
MAX_BARE_OBJECT = 256 * 1024  # a longer unbalanced `{"` is prose, not a call: stop holding it


def _fence_info(line: str) -> str:
    return " ".join(line.strip().lower().split())


class _BraceScanner:
    """Finds where a JSON object starting at buffer[0] ends, resuming where it stopped."""

    def __init__(self) -> None:
        self.pos = 0
        self.depth = 0
        self.in_string = False
        self.escaped = False

    def scan(self, buf: str) -> int:
        """End index (exclusive) of the balanced object, or -1 while it is still open."""
        i = self.pos
        if self.escaped:
            if i >= len(buf):
                return -1
            i += 1
            self.escaped = False
        while True:
            match = _JSON_TOKEN.search(buf, i)
            if match is None:
                self.pos = len(buf)
                return -1
            char, i = match.group(), match.end()
            if self.in_string:
                if char == "\\":
                    if i >= len(buf):
                        self.escaped, self.pos = True, i
                        return -1
                    i += 1
                elif char == '"':
                    self.in_string = False
            elif char == '"':
                self.in_string = True
            elif char == "{":
                self.depth += 1
            elif char == "}":
                self.depth -= 1
                if self.depth == 0:
                    return i


class _Mode(enum.Enum):
    TEXT = "text"
    FOREIGN_FENCE = "foreign_fence"  # inside a non-tool code block: pass through to its end


class ToolTextParser:
    """feed() text chunks, then finish(); each returns the segments that became final."""

    def __init__(self, names: ToolNames) -> None:
        self._names = names
        self._buf = ""
        self._mode = _Mode.TEXT
        self._scanner: _BraceScanner | None = None
        self._fence_from = 3
        self._pending_space = ""
        self.calls_seen = 0

    def feed(self, text: str) -> list[Segment]:
        out: list[Segment] = []
        self._buf += text
        self._drain(out, final=False)
        return out

    def finish(self) -> list[Segment]:
        out: list[Segment] = []
        self._drain(out, final=True)
        leftover, self._buf = self._buf, ""
        self._mode = _Mode.TEXT
        self._text(out, leftover)
        if self._pending_space and not self.calls_seen:
            self._append(out, self._pending_space)
        self._pending_space = ""
        return out

    def _drain(self, out: list[Segment], final: bool) -> None:
        progressed = True
        while self._buf and progressed:
            if self._mode is _Mode.FOREIGN_FENCE:
                progressed = self._step_foreign(out, final)
            else:
                progressed = self._step_text(out, final)

    def _step_text(self, out: list[Segment], final: bool) -> bool:
        match = _CANDIDATE.search(self._buf)
        if match is None:
            self._text(out, self._buf)
            self._buf = ""
            return False
        if match.start():
            self._text(out, self._buf[: match.start()])
            self._buf = self._buf[match.start() :]
        if self._buf[0] == "`":
            return self._step_fence(out, final)
        return self._step_object(out, final)

    def _step_fence(self, out: list[Segment], final: bool) -> bool:
        buf = self._buf
        ticks = len(buf) - len(buf.lstrip("`"))
        if ticks < 3:
            if ticks == len(buf) and not final:
                return False  # "`" or "``" at the end may grow into a fence
            self._text(out, buf[:ticks])
            self._buf = buf[ticks:]
            return True
        close = buf.find("```", self._fence_from)
        newline = buf.find("\n", 3)
        if close == -1:
            if newline != -1 and _fence_info(buf[3:newline]) not in TOOL_FENCE_INFOS:
                self._text(out, buf[: newline + 1])
                self._buf = buf[newline + 1 :]
                self._mode = _Mode.FOREIGN_FENCE
                return True
            self._fence_from = max(3, len(buf) - 2)
            return False
        self._buf, self._fence_from = buf[close + 3 :], 3
        if newline != -1 and newline < close:
            info, body = buf[3:newline], buf[newline + 1 : close]
        else:
            info, body = "", buf[3:close]
        calls = None
        if _fence_info(info) in TOOL_FENCE_INFOS:
            calls = calls_from_json(body, self._names)
        if calls:
            self._calls(out, calls)
        else:
            self._text(out, buf[: close + 3])
        return True

    def _step_object(self, out: list[Segment], final: bool) -> bool:
        buf = self._buf
        first = _SPACES.match(buf, 1)
        start = first.end() if first else 1
        if start >= len(buf):
            return False  # "{" then nothing yet: wait for the next character
        if buf[start] != '"':
            self._text(out, "{")
            self._buf = buf[1:]
            return True
        scanner = self._scanner or _BraceScanner()
        self._scanner = scanner
        end = scanner.scan(buf)
        if end == -1:
            if len(buf) > MAX_BARE_OBJECT:
                self._scanner = None
                self._text(out, "{")
                self._buf = buf[1:]
                return True
            return False
        self._scanner = None
        self._buf = buf[end:]
        calls = calls_from_json(buf[:end], self._names)
        if calls:
            self._calls(out, calls)
        else:
            self._text(out, buf[:end])
        return True

    def _step_foreign(self, out: list[Segment], final: bool) -> bool:
        buf = self._buf
        close = buf.find("```")
        if close == -1:
            keep = 0 if final else len(buf) - len(buf.rstrip("`"))
            self._text(out, buf[: len(buf) - keep])
            self._buf = buf[len(buf) - keep :]
            return False
        self._text(out, buf[: close + 3])
        self._buf = buf[close + 3 :]
        self._mode = _Mode.TEXT
        return True

    def _text(self, out: list[Segment], text: str) -> None:
        # Trailing whitespace is held back: it is dropped if a call follows, so a reply that
        # is only tool calls carries no stray newlines as content.
        if not text:
            return
        body = text.rstrip()
        if body:
            self._append(out, self._pending_space + body)
            self._pending_space = ""
        self._pending_space += text[len(body) :]

    @staticmethod
    def _append(out: list[Segment], text: str) -> None:
        if out and isinstance(out[-1], str):
            out[-1] += text
        else:
            out.append(text)

    def _calls(self, out: list[Segment], calls: list[ParsedCall]) -> None:
        self._pending_space = ""
        self.calls_seen += len(calls)
        out.extend(calls)


def parse_tool_text(text: str, names: ToolNames) -> list[Segment]:
    """Whole-text form of the parser (non-streaming responses, tests)."""
    parser = ToolTextParser(names)
    return parser.feed(text) + parser.finish()
