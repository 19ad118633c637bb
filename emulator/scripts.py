"""Runs in the emulator: scripted replies and fault injection from LINGMA_EMULATOR_SCRIPT.

The script is JSON `{"rules": [...]}`. The first rule whose `match` regex is found in the
latest user turn of the prompt decides the answer. Without a match the answer is a
deterministic echo naming the model. The file is re-read whenever it changes on disk, so tests
can rewrite it between requests.

Rule keys: `match`, `model` (regexes), `reply`, `thinking`, `tool_call` (a text tool call in
the front's format), `native_tool_call` (an ACP tool card announced and completed at once),
`error`, `delay_ms`, `action` (hang, crash, drop, garbage, logout: see Action), `times`, and
`ide_tool`. An `error` is `{status, message}` or
names a `kind` worded as lingma-protocol.md §10 / §14.10 show it (status defaulted, message
filled in): `rate_limit` (429, the in-band `TOO_MANY_REQUESTS {"code":"429",...}` envelope),
`quota` (403 with code 110) or `login` (403 with code 105, "Login expired"). Legacy-only
keys: `overwrite` (text sent after the reply in a `chat/answer` with `overwrite: true`) and
`filtered` (a final `chat/answer` with `isFiltered: true`).

    "ide_tool": {"name": "read_file", "parameters": {"filePath": "/x"}, "async": false}

an IDE tool the runtime asks the *client* to execute (lingma-protocol.md §9.1, §12.8). It only
acts with LINGMA_EMULATOR_TOOLS=1 and an agent-mode turn (tools.py); then, before the answer
text, the turn announces the tool, sends a `tool/invoke` request and waits for the client's
verdict (its reply, or a `tool/invokeResult` call) up to LINGMA_EMULATOR_TOOL_TIMEOUT_MS. Else
it is ignored, and the rule answers as if the key were absent.

`chunk_delay_ms` makes a slow stream: that pause between two chunks of the answer (the runtime
side then sends one token per chunk). The cloud side (cloud_server.py) reads the same rules
against the latest user message: `reply` and `thinking` stream as deltas, `tool_call` becomes a
native tool call whose arguments arrive in several fragments, `delay_ms` delays the first
chunk, and one key is its own: `cloud_fault` (a CloudFault below; `retry_after_s` goes with the
rate limits).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import msgspec

from front.tools import render_tool_call

log = logging.getLogger("lingma-emulator.scripts")

_USER_LINE = re.compile(r"^\[user\][ \t]*", re.IGNORECASE | re.MULTILINE)
_TRAILING_CUE = re.compile(r"\n\[assistant\][ \t]*\Z", re.IGNORECASE)
_FILLER = [
    "lorem",
    "ipsum",
    "dolor",
    "sit",
    "amet",
    "consectetur",
    "adipiscing",
    "elit",
    "sed",
    "do",
    "eiusmod",
    "tempor",
]
MAX_ECHO_CHARS = 4000


class Action(StrEnum):
    """A fault that happens after the rule's reply (if any) has been streamed."""

    HANG = "hang"  # never send the finish event
    CRASH = "crash"  # exit the whole process
    DROP = "drop"  # close the client's WebSocket
    GARBAGE = "garbage"  # send malformed frames, then finish the answer normally
    # Drop the account's login (cache/user removed, so auth/status says 1), as a token the
    # server revoked mid-run would; the turn then ends as logged out (the rule's `error`, else
    # the `login` kind's wording). Runtime side only.
    LOGOUT = "logout"


class ScriptedErrorKind(StrEnum):
    RATE_LIMIT = "rate_limit"
    QUOTA = "quota"
    LOGIN = "login"


# kind -> (status, wording with {message}, default message): the spec's forms (§10, §14.10).
_WORDINGS: dict[ScriptedErrorKind, tuple[int, str, str]] = {
    ScriptedErrorKind.RATE_LIMIT: (
        429,
        'TOO_MANY_REQUESTS {{"code":"429","message":"{message}"}}',
        "Too many requests, please try again later",
    ),
    ScriptedErrorKind.QUOTA: (403, '{{"code":"110","message":"{message}"}}', "quota exceeded"),
    ScriptedErrorKind.LOGIN: (403, '{{"code":"105","message":"{message}"}}', "Login expired"),
}


class CloudFault(StrEnum):
    """How a cloud chat goes wrong (lingma-protocol.md §14.15 scriptable replies)."""

    RATE_LIMIT_INBAND = "rate_limit_inband"  # HTTP 200, one 429 envelope, no [DONE]
    RATE_LIMIT_HTTP = "rate_limit_http"  # plain HTTP 429
    SERVER_ERROR = "server_error"  # HTTP 500
    CUT = "cut"  # a few chunks, then the connection is dropped
    TRUNCATE = "truncate"  # a few chunks, then a clean end without finish or [DONE]
    EXPIRED = "expired"  # 403 code 105 (HTTP, or in-band with CLOUD_AUTH_INBAND)
    EMPTY = "empty"  # finish_reason stop and [DONE] with no content at all
    ERROR_AFTER_FINISH = "error_after_finish"  # the whole answer, then an in-band 500


class ErrorSpec(msgspec.Struct, forbid_unknown_fields=True):
    status: int = 500
    message: str = ""
    kind: ScriptedErrorKind | None = None

    def worded(self) -> ErrorSpec:
        """The same error with its kind's status and wording applied (itself without a kind)."""
        if self.kind is None:
            return self
        status, template, default = _WORDINGS[self.kind]
        text = template.format(message=self.message or default)
        return ErrorSpec(status=status, message=text, kind=self.kind)


class ToolCallSpec(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    arguments: dict[str, Any] = msgspec.field(default_factory=dict)


class IdeToolSpec(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    parameters: dict[str, Any] = msgspec.field(default_factory=dict)
    # async: the client acks tool/invoke at once and reports later with tool/invokeResult.
    is_async: bool = msgspec.field(default=False, name="async")


class Rule(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    match: str | None = None  # regex searched in the latest user turn; None matches anything
    model: str | None = None  # optional regex on the model key
    reply: str | None = None
    thinking: str | None = None
    tool_call: ToolCallSpec | None = None
    # One of the runtime's own IDE tools, announced the ACP way (session/update tool_call +
    # tool_call_update, §9.1); the legacy flow has no such event and ignores it.
    native_tool_call: ToolCallSpec | None = None
    ide_tool: IdeToolSpec | None = None  # a tool/invoke round trip (tools module, agent mode)
    error: ErrorSpec | None = None
    delay_ms: int = 0
    action: Action | None = None
    times: int | None = None  # apply to the first N matching requests only
    # Legacy chat/answer variants (§5.3): after the reply, one delta with `overwrite: true`
    # carrying this text, or one with `isFiltered: true`.
    overwrite: str | None = None
    filtered: bool = False
    chunk_delay_ms: int = 0  # pause between two chunks of the answer (both sides)
    cloud_fault: CloudFault | None = None  # cloud: how the chat goes wrong
    retry_after_s: int | None = None  # cloud rate limits: the Retry-After to send


class ScriptFile(msgspec.Struct, forbid_unknown_fields=True):
    rules: list[Rule] = msgspec.field(default_factory=list)


@dataclass(frozen=True)
class ScriptedAnswer:
    """What one turn says and how it ends."""

    text: str
    thinking: str = ""
    native_tool: ToolCallSpec | None = None
    ide_tool: IdeToolSpec | None = None
    error: ErrorSpec | None = None
    delay_ms: int = 0
    action: Action | None = None
    overwrite: str | None = None
    filtered: bool = False
    rule: int | None = None  # index of the rule that decided, None for the default reply
    tool_call: ToolCallSpec | None = None  # the rule's tool call, structured (cloud side)
    reply: str = ""  # the rule's own reply text, without the rendered tool call
    chunk_delay_ms: int = 0
    cloud_fault: CloudFault | None = None
    retry_after_s: int | None = None


@dataclass
class _CompiledRule:
    rule: Rule
    match: re.Pattern[str] | None
    model: re.Pattern[str] | None
    used: int = 0


def latest_user_turn(prompt_text: str) -> str:
    """Text after the last line starting with `[user]`, else the whole text."""
    matches = list(_USER_LINE.finditer(prompt_text))
    last = matches[-1] if matches else None
    turn = prompt_text[last.end() :] if last else prompt_text
    return _TRAILING_CUE.sub("", turn.rstrip()).strip()


def default_reply(model: str, latest: str, reply_tokens: int, images: Sequence[str] = ()) -> str:
    """Deterministic: names the model, echoes the latest user text (and says which images came
    with the prompt), pads to `reply_tokens`."""
    echo = latest if len(latest) <= MAX_ECHO_CHARS else latest[:MAX_ECHO_CHARS] + "…"
    text = f"[lingma-emulator {model}] You said: {echo}"
    if images:
        text += " (images received: " + "; ".join(images) + ")"
    missing = reply_tokens - len(text.split())
    if missing > 0:
        text += " " + " ".join(_FILLER[i % len(_FILLER)] for i in range(missing))
    return text


def default_thinking(model: str, latest: str) -> str:
    return f"[lingma-emulator {model}] thinking about: {latest[:80]}"


class ScriptBook:
    """Loads the script file lazily and picks the answer for each prompt."""

    def __init__(self, path: Path | None, reply_tokens: int = 0) -> None:
        self.path = path
        self.reply_tokens = reply_tokens
        self._identity: tuple[int, int, int] | None = None
        self._rules: list[_CompiledRule] = []

    def answer(
        self,
        prompt_text: str,
        model: str,
        *,
        reasoning: bool = False,
        images: Sequence[str] = (),
    ) -> ScriptedAnswer:
        """`images`: what the prompt's image items held, for the default reply to say."""
        latest = latest_user_turn(prompt_text)
        for index, compiled in enumerate(self._current_rules()):
            if _applies(compiled, latest, model):
                compiled.used += 1
                return _answer_from(compiled.rule, index, reasoning, model, latest, images=images)
        thinking = default_thinking(model, latest) if reasoning else ""
        return ScriptedAnswer(
            text=default_reply(model, latest, self.reply_tokens, images), thinking=thinking
        )

    def _current_rules(self) -> list[_CompiledRule]:
        if self.path is None:
            return []
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self._identity, self._rules = None, []
            return []
        identity = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if identity != self._identity:
            self._identity = identity
            self._rules = self._load()
        return self._rules

    def _load(self) -> list[_CompiledRule]:
        assert self.path is not None
        try:
            script = msgspec.json.decode(self.path.read_bytes(), type=ScriptFile)
            return [_compile(rule) for rule in script.rules]
        except (OSError, msgspec.DecodeError, msgspec.ValidationError, re.error) as exc:
            log.warning("EMULATOR script %s ignored: %s", self.path, exc)
            return []


def _compile(rule: Rule) -> _CompiledRule:
    return _CompiledRule(
        rule=rule,
        match=re.compile(rule.match) if rule.match is not None else None,
        model=re.compile(rule.model) if rule.model is not None else None,
    )


def _applies(compiled: _CompiledRule, latest: str, model: str) -> bool:
    if compiled.rule.times is not None and compiled.used >= compiled.rule.times:
        return False
    if compiled.model is not None and not compiled.model.search(model):
        return False
    return compiled.match is None or compiled.match.search(latest) is not None


def _error_of(rule: Rule) -> ErrorSpec | None:
    if rule.error is not None:
        return rule.error.worded()
    if rule.action is Action.LOGOUT:
        return ErrorSpec(kind=ScriptedErrorKind.LOGIN).worded()
    return None


def _answer_from(
    rule: Rule, index: int, reasoning: bool, model: str, latest: str, *, images: Sequence[str] = ()
) -> ScriptedAnswer:
    parts = [rule.reply] if rule.reply else []
    if rule.tool_call is not None:
        parts.append(render_tool_call(rule.tool_call.name, rule.tool_call.arguments))
    scripted_outcome = (
        rule.error is not None
        or rule.action is not None
        or rule.native_tool_call is not None
        or rule.reply == ""  # an explicitly empty answer
        or rule.cloud_fault is not None
    )
    if not parts and not scripted_outcome:
        parts.append(default_reply(model, latest, 0, images))
    thinking = rule.thinking or ""
    if not thinking and reasoning and not scripted_outcome:
        thinking = default_thinking(model, latest)
    return ScriptedAnswer(
        text="\n\n".join(parts),
        thinking=thinking,
        native_tool=rule.native_tool_call,
        ide_tool=rule.ide_tool,
        error=_error_of(rule),
        delay_ms=rule.delay_ms,
        action=rule.action,
        overwrite=rule.overwrite,
        filtered=rule.filtered,
        rule=index,
        tool_call=rule.tool_call,
        reply=rule.reply or "",
        chunk_delay_ms=rule.chunk_delay_ms,
        cloud_fault=rule.cloud_fault,
        retry_after_s=rule.retry_after_s,
    )
