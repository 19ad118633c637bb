"""Runs in the emulator: the cloud API's wire formats — SSE envelopes and `Encode=1` bodies.

Each event is `data:<envelope>\\n\\n` with the envelope exactly
`{"headers":{"Content-Type":["application/json"]},"body":"<chunk JSON>","statusCodeValue":200,
"statusCode":"OK"}` (lingma-protocol.md §14.8, §14.15); knobs switch to the other forms clients
must accept. `Encode=1` (§14.6): base64, thirds rotated, characters mapped; its own inverse.
"""

from __future__ import annotations

import base64
import binascii
import http
import string
import time
import uuid
from typing import Any

import msgspec

from emulator.cloud_settings import CloudKnobs, DoneForm

_encode = msgspec.json.Encoder().encode
STANDARD = string.ascii_uppercase + string.ascii_lowercase + string.digits + "+/="
OBFUSCATED = "_doRTgHZBKcGVjlvpC,@aFSx#DPuNJme&i*MzLOEn)sUrthbf%Y^w.(kIQyXqWA!$"
_TO_WIRE = str.maketrans(STANDARD, OBFUSCATED)
_FROM_WIRE = str.maketrans(OBFUSCATED, STANDARD)
JSON_HEADERS = {"Content-Type": ["application/json"]}


def _rotate(text: str) -> str:
    third = len(text) // 3
    return text[len(text) - third :] + text[third : len(text) - third] + text[:third]


def encode_body(raw: bytes) -> str:
    """The IDE's `Encode=1` obfuscation (TAP, QD vectors: b"hello" → "q$FruHPH")."""
    return _rotate(base64.b64encode(raw).decode()).translate(_TO_WIRE)


def decode_body(text: str) -> bytes:
    """Inverse of `encode_body`; ValueError when the text is no encoded body."""
    try:
        return base64.b64decode(_rotate(text.strip().translate(_FROM_WIRE)), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("not an Encode=1 body") from exc


class ChatStreamWire:
    """Bytes for one chat stream, in the form the knobs choose."""

    def __init__(self, knobs: CloudKnobs, model: str) -> None:
        self.knobs = knobs
        self.model = model or "auto"
        self.chunk_id = f"chatcmpl-{uuid.uuid4()}"
        self.created = int(time.time())

    def line(self, payload: Any) -> bytes:
        prefix = b"data: " if self.knobs.data_space else b"data:"
        text = payload if isinstance(payload, bytes) else _encode(payload)
        return prefix + text + b"\n\n"

    @staticmethod
    def envelope(body: str, status: int = 200) -> dict[str, Any]:
        name = "OK" if status == 200 else http.HTTPStatus(status).name
        return {
            "headers": JSON_HEADERS,
            "body": body,
            "statusCodeValue": status,
            "statusCode": name,
        }

    def chunk(
        self,
        delta: dict[str, Any],
        finish_reason: str | None = None,
        usage: dict[str, int] | None = None,
    ) -> bytes:
        chunk: dict[str, Any] = {
            "id": self.chunk_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        }
        if usage is not None:
            chunk["usage"] = usage
        if self.knobs.bare_chunks:
            return self.line(chunk)
        return self.line(self.envelope(_encode(chunk).decode()))

    def error(self, status: int, code: str, message: str) -> bytes:
        """An in-band error envelope inside an HTTP-200 stream."""
        body = _encode({"code": code, "message": message}).decode()
        return self.line(self.envelope(body, status))

    def stats(self, prompt_tokens: int, completion_tokens: int) -> bytes:
        """TAP's bare statistics line."""
        usage = {"input_tokens": prompt_tokens, "output_tokens": completion_tokens}
        return self.line(
            {"firstTokenDuration": 120, "totalDuration": 900, "serverDuration": 850, "usage": usage}
        )

    def done(self) -> bytes:
        if self.knobs.done is DoneForm.ENVELOPE:
            return self.line(self.envelope("[DONE]"))
        return self.line(b"[DONE]")
