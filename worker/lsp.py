"""Runs in the worker: LSP framing of the runtime's JSON-RPC messages, both directions.

Wire rules (lingma-protocol.md §3.5): every message is
`Content-Length: <utf8 bytes>\\r\\n\\r\\n<json>` in one text frame; incoming bytes are
buffered across frames and one frame may hold several messages. Raw JSON without a header is
tolerated on the way in (the real runtime never sends it, but a peer that does must not wedge
the stream).
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec

log = logging.getLogger(__name__)

HEADER_END = b"\r\n\r\n"
MAX_HEADER_BYTES = 8192
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
_PLAIN_HEADER = b"Content-Length: "
_PLAIN_LENGTH_AT = len(_PLAIN_HEADER)


class LspFramingError(ValueError):
    """The byte stream cannot be parsed any more (bad header, absurd length)."""


def encode_message(message: dict[str, Any]) -> bytes:
    """One LSP-framed message as the UTF-8 payload of one text frame (length counted in bytes)."""
    body = msgspec.json.encode(message)
    return b"Content-Length: %d\r\n\r\n%s" % (len(body), body)


def _content_length(header: bytes) -> int:
    if header.startswith(_PLAIN_HEADER) and b"\r" not in header:  # what the runtime sends
        length = _parse_length(header[len(_PLAIN_HEADER) :])
    else:
        for line in header.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = _parse_length(value.strip())
                break
        else:
            raise LspFramingError(f"no Content-Length in header {header[:80]!r}")
    if not 0 <= length <= MAX_MESSAGE_BYTES:
        raise LspFramingError(f"Content-Length {length} out of range")
    return length


def _parse_length(value: bytes) -> int:
    try:
        return int(value)
    except ValueError as exc:
        raise LspFramingError(f"bad Content-Length {value!r}") from exc


class LspDecoder:
    """Incremental LSP-frame parser: feed bytes as they arrive, get whole JSON messages back.

    Parses straight out of each frame's bytes; only an unfinished tail is buffered, so the
    common case (one whole message per WebSocket frame) copies nothing. That case, in the
    runtime's own spelling (`Content-Length: N` and nothing else), takes a short path: the
    worker reads one such frame per chunk of every answer.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Any]:
        if self._buffer:
            self._buffer += data
            data = bytes(self._buffer)
            self._buffer.clear()
        elif data.startswith(_PLAIN_HEADER):
            end = data.find(HEADER_END, _PLAIN_LENGTH_AT)
            digits = data[_PLAIN_LENGTH_AT:end]
            if end > 0 and digits.isdigit() and end + len(HEADER_END) + int(digits) == len(data):
                messages: list[Any] = []
                _decode_into(messages, memoryview(data)[end + len(HEADER_END) :], "JSON-RPC body")
                return messages
        messages = []
        position = 0
        while position < len(data):
            if data[position] in b"{[":
                # Tolerated: a peer that sends bare JSON frames (the real runtime never does).
                # One that does not decode is dropped: kept, it would swallow every later frame.
                _decode_into(messages, data[position:], "unframed message")
                return messages
            end = data.find(HEADER_END, position)
            if end < 0:
                if len(data) - position > MAX_HEADER_BYTES:
                    raise LspFramingError("header too long")
                break
            body_start = end + len(HEADER_END)
            body_end = body_start + _content_length(data[position:end])
            if body_end > len(data):
                break
            _decode_into(messages, data[body_start:body_end], "JSON-RPC body")
            position = body_end
        if position < len(data):
            self._buffer += data[position:]
        return messages


def _decode_into(messages: list[Any], body: bytes | memoryview, what: str) -> None:
    try:
        messages.append(msgspec.json.decode(body))
    except msgspec.DecodeError:
        log.warning("dropping an undecodable %s (%d bytes)", what, len(body))
