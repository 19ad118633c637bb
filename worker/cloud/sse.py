"""Runs in the worker: the cloud chat's SSE stream decoded into small events (§14.8).

Tolerant by design, because three public clients disagree on the wire details: `data:` with or
without a space; each data line is an event (a line that is not JSON yet waits for the next
data line of the same event); blank, comment, `event:`/`id:`/`retry:` lines are skipped; every
event is an envelope `{"headers","body":"<chunk JSON>","statusCodeValue","statusCode"}` or a bare
chunk; `[DONE]` arrives bare or as an envelope body; TAP's statistics line
`{"firstTokenDuration","totalDuration","usage":{input_tokens,output_tokens}}` carries usage; an
envelope with a status of 400 or more is an in-band error. Lines may be megabytes long.
"""

from __future__ import annotations

import http
import logging
from dataclasses import dataclass
from typing import Any

import msgspec

log = logging.getLogger(__name__)

MAX_LINE_BYTES = 16 * 1024 * 1024
DONE = "[DONE]"
_SKIPPED_FIELDS = ("event:", "id:", "retry:")
_decode = msgspec.json.Decoder()


class StreamError(Exception):
    """The byte stream cannot be an SSE stream (a line beyond every sane length)."""


@dataclass(frozen=True, slots=True)
class TextPiece:
    text: str


@dataclass(frozen=True, slots=True)
class ReasoningPiece:
    text: str


@dataclass(frozen=True, slots=True)
class ToolFragment:
    index: int | None
    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class FinishSeen:
    reason: str


@dataclass(frozen=True, slots=True)
class UsageSeen:
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True, slots=True)
class DoneSeen:
    pass


@dataclass(frozen=True, slots=True)
class InBandError:
    status: int
    code: str
    message: str


CloudEvent = (
    TextPiece | ReasoningPiece | ToolFragment | FinishSeen | UsageSeen | DoneSeen | InBandError
)


class LineSplitter:
    """Bytes in, complete text lines out (`\\n` or `\\r\\n`); bounded line length."""

    def __init__(self, max_line: int = MAX_LINE_BYTES) -> None:
        self._pending = bytearray()
        self._max_line = max_line

    def feed(self, data: bytes) -> list[str]:
        self._pending += data
        *lines, rest = self._pending.split(b"\n")
        if len(rest) > self._max_line:
            raise StreamError(f"an SSE line exceeds {self._max_line} bytes")
        self._pending = bytearray(rest)
        return [line.rstrip(b"\r").decode("utf-8", "replace") for line in lines]

    def flush(self) -> list[str]:
        rest, self._pending = bytes(self._pending), bytearray()
        return [rest.rstrip(b"\r").decode("utf-8", "replace")] if rest.strip() else []


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _int(value: Any) -> int:
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return 0


def envelope_status(envelope: dict[str, Any]) -> int:
    """`statusCodeValue`, else the Spring name in `statusCode` (FORBIDDEN → 403), else 200."""
    status = _int(envelope.get("statusCodeValue")) or _int(envelope.get("statusCode"))
    if status:
        return status
    name = envelope.get("statusCode")
    if isinstance(name, str) and name:
        try:
            return int(http.HTTPStatus[name.upper()])
        except KeyError:
            return 500 if name.upper() not in ("OK", "SUCCESS") else 200
    return 200


def error_details(body: Any, fallback: str) -> tuple[str, str]:
    """(code, message) of an error body: JSON `{"code","message"}` (string or object) or text."""
    parsed = body
    if isinstance(body, str):
        try:
            parsed = _decode.decode(body)
        except msgspec.DecodeError:
            return "", body.strip()[:300] or fallback
    if isinstance(parsed, dict):
        inner = _object(parsed.get("error")) or parsed
        code = inner.get("code")
        message = inner.get("message") or inner.get("msg") or inner.get("errorMessage")
        return (str(code) if code is not None else ""), str(message or fallback)[:300]
    return "", fallback


def _usage(usage: Any) -> UsageSeen | None:
    if not isinstance(usage, dict):
        return None
    prompt = _int(usage.get("prompt_tokens")) or _int(usage.get("input_tokens"))
    completion = _int(usage.get("completion_tokens")) or _int(usage.get("output_tokens"))
    return UsageSeen(prompt, completion) if prompt or completion else None


def _fragments(delta: dict[str, Any]) -> list[CloudEvent]:
    calls = delta.get("tool_calls")
    loose_id = delta.get("tool_call_id")  # ZC-RA's non-standard spelling of a late id
    out: list[CloudEvent] = []
    for call in calls if isinstance(calls, list) else []:
        if not isinstance(call, dict):
            continue
        function = _object(call.get("function"))
        index = call.get("index")
        arguments = function.get("arguments")
        out.append(
            ToolFragment(
                index=index if isinstance(index, int) and not isinstance(index, bool) else None,
                call_id=str(call.get("id") or loose_id or "").strip(),
                name=str(function.get("name") or "").strip(),
                arguments=arguments if isinstance(arguments, str) else "",
            )
        )
    if not out and isinstance(loose_id, str) and loose_id.strip():
        out.append(ToolFragment(index=None, call_id=loose_id.strip(), name="", arguments=""))
    return out


def chunk_events(chunk: dict[str, Any]) -> list[CloudEvent]:
    """One `chat.completion.chunk` (or a whole `message`, as non-streamed replies carry)."""
    out: list[CloudEvent] = []
    choices = chunk.get("choices")
    for choice in choices if isinstance(choices, list) else []:
        if not isinstance(choice, dict):
            continue
        delta = _object(choice.get("delta")) or _object(choice.get("message"))
        reasoning = delta.get("reasoning_content")
        if isinstance(reasoning, str) and reasoning:
            out.append(ReasoningPiece(reasoning))
        content = delta.get("content")
        if isinstance(content, str) and content:
            out.append(TextPiece(content))
        out += _fragments(delta)
        reason = choice.get("finish_reason")
        if isinstance(reason, str) and reason:
            out.append(FinishSeen(reason))
    usage = _usage(chunk.get("usage"))
    if usage is not None:
        out.append(usage)
    return out


def payload_events(payload: Any) -> list[CloudEvent]:
    """A decoded data payload: an envelope, a bare chunk, TAP's statistics, or an error."""
    if not isinstance(payload, dict):
        return []
    if "body" in payload or "statusCodeValue" in payload:
        return _envelope_events(payload)
    if "choices" in payload:
        return chunk_events(payload)
    if "error" in payload:
        code, message = error_details(payload, "the cloud reported an error")
        return [InBandError(_int(payload.get("status")) or 500, code, message)]
    usage = _usage(payload.get("usage"))  # TAP's statistics line
    return [usage] if usage is not None else []


def _envelope_events(envelope: dict[str, Any]) -> list[CloudEvent]:
    status = envelope_status(envelope)
    body = envelope.get("body")
    if status >= 400:
        code, message = error_details(body, str(envelope.get("statusCode") or status))
        return [InBandError(status, code, message)]
    if isinstance(body, dict):
        return chunk_events(body)
    if not isinstance(body, str) or not body.strip():
        return []
    if body.strip() == DONE:
        return [DoneSeen()]
    try:
        inner = _decode.decode(body)
    except msgspec.DecodeError:
        log.debug("skipping an envelope whose body is not JSON (%d chars)", len(body))
        return []
    return payload_events(inner) if isinstance(inner, dict) and "body" not in inner else []


class SseDecoder:
    """Feed raw bytes, get CloudEvents; `close()` flushes an unterminated last line."""

    def __init__(self, max_line: int = MAX_LINE_BYTES) -> None:
        self._lines = LineSplitter(max_line)
        self._partial = ""  # data lines of one event that are not valid JSON yet
        self._max_line = max_line

    def feed(self, data: bytes) -> list[CloudEvent]:
        out: list[CloudEvent] = []
        for line in self._lines.feed(data):
            out += self._line(line)
        return out

    def close(self) -> list[CloudEvent]:
        out: list[CloudEvent] = []
        for line in self._lines.flush():
            out += self._line(line)
        return out

    def _line(self, line: str) -> list[CloudEvent]:
        if not line.strip():
            if self._partial:
                log.debug("dropping an SSE event that never became JSON")
                self._partial = ""
            return []
        if line.startswith(":") or line.startswith(_SKIPPED_FIELDS):
            return []
        if not line.startswith("data:"):
            return self._data(line.strip())  # a bare line (no field name): read it as data
        return self._data(line[len("data:") :].strip())

    def _data(self, payload: str) -> list[CloudEvent]:
        if payload == DONE and not self._partial:
            return [DoneSeen()]
        candidate = f"{self._partial}\n{payload}" if self._partial else payload
        for text in (candidate, payload) if self._partial else (candidate,):
            try:
                decoded = _decode.decode(text)
            except msgspec.DecodeError:
                continue
            self._partial = ""
            return payload_events(decoded)
        if len(candidate) > self._max_line:
            raise StreamError(f"an SSE event exceeds {self._max_line} bytes")
        self._partial = candidate
        return []
