"""Runs in the emulator: LSP `Content-Length` framing of JSON-RPC bodies inside WebSocket frames.

The header counts UTF-8 bytes. Incoming bytes are buffered across frames, and one frame may carry
several messages. A message without the header (raw JSON) is rejected, as the real runtime does
(it logs `Unknown message header`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

HEADER_NAME = b"content-length"
HEADER_END = b"\r\n\r\n"
_KNOWN_HEADERS = (HEADER_NAME, b"content-type")
_BLANK = b"\r\n \t"
MAX_HEADER_BYTES = 4096
MAX_BODY_BYTES = 64 * 1024 * 1024


def frame(body: bytes) -> str:
    """One outgoing message as the text of one WebSocket frame."""
    return f"Content-Length: {len(body)}\r\n\r\n{body.decode()}"


@dataclass
class Decoded:
    """What one `feed` produced: complete bodies and how many unframed blobs were dropped."""

    bodies: list[bytes] = field(default_factory=list)
    rejected: int = 0


class FrameDecoder:
    """Incremental decoder: feed it whatever arrived, take out the complete message bodies."""

    def __init__(self, max_body: int = MAX_BODY_BYTES) -> None:
        self._buffer = bytearray()
        self._max_body = max_body

    def feed(self, data: bytes) -> Decoded:
        self._buffer += data
        out = Decoded()
        while self._buffer:
            if not self._take_one(out):
                break
        return out

    def _take_one(self, out: Decoded) -> bool:
        """Consume one message (or one rejected blob); False when more bytes are needed."""
        self._skip_blank()
        end = self._find_header_end()
        if end is None:
            out.rejected += 1
            self._drop_until_header(skip=1)
            return True
        if end < 0:
            return False
        return self._take_body(end, out)

    def _skip_blank(self) -> None:
        buffer = self._buffer
        if buffer and buffer[0] in _BLANK:
            del buffer[: len(buffer) - len(buffer.lstrip(bytes(_BLANK)))]

    def _find_header_end(self) -> int | None:
        """Offset of the blank line ending the header; -1: need more bytes; None: not a header."""
        buffer = self._buffer
        if not buffer:
            return -1
        if not _starts_like_header(bytes(buffer[: len(HEADER_NAME)])):
            return None
        end = buffer.find(HEADER_END)
        if end < 0 and len(buffer) > MAX_HEADER_BYTES:
            return None
        return end

    def _take_body(self, header_end: int, out: Decoded) -> bool:
        buffer = self._buffer
        body_start = header_end + len(HEADER_END)
        length = _content_length(bytes(buffer[:header_end]))
        if length is None or length > self._max_body:
            out.rejected += 1
            del buffer[:body_start]
            return True
        if len(buffer) < body_start + length:
            return False
        out.bodies.append(bytes(buffer[body_start : body_start + length]))
        del buffer[: body_start + length]
        return True

    def _drop_until_header(self, skip: int = 0) -> None:
        """Discard garbage up to the next thing that looks like a header (or everything)."""
        lowered = bytes(self._buffer).lower()
        index = lowered.find(HEADER_NAME, skip)
        if index < 0:
            self._buffer.clear()
        else:
            del self._buffer[:index]


def _starts_like_header(head: bytes) -> bool:
    """True if `head` is (a prefix of) a header line we know; partial headers must wait."""
    lowered = head.lower()
    return any(name.startswith(lowered) or lowered.startswith(name) for name in _KNOWN_HEADERS)


def _content_length(header_block: bytes) -> int | None:
    for line in header_block.split(b"\r\n"):
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() == HEADER_NAME:
            try:
                length = int(value.strip())
            except ValueError:
                return None
            return length if length >= 0 else None
    return None
