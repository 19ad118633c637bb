"""Runs in the emulator: the image items of an ACP `session/prompt` (lingma-protocol.md §5.4).

An item is `{type: "image", mimeType, uri, data}`. `uri` must name a file the runtime can read,
as `<scheme>:///agent/file?path=<query-escaped absolute path>`; the scheme is `lingma` unless
LINGMA_EMULATOR_IMAGE_URI_SCHEME says otherwise (QoderCN's is `qodercn`, §5.4). The file is
read while the prompt is handled (so a client that removes it too early is caught), and when
`data` is sent too it must hold the same bytes. A wrong scheme, an unreadable file or bytes
that disagree are refused with INVALID_PARAMS naming the problem. What arrived goes into the
default reply ("image/png, 68 bytes") and the record, so a test can prove the image reached the
runtime.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from emulator.connection import INVALID_PARAMS, MethodError


@dataclass(frozen=True)
class ReceivedImage:
    mime_type: str
    size: int
    uri: str

    def describe(self) -> str:
        return f"{self.mime_type}, {self.size} bytes"

    def record(self) -> dict[str, Any]:
        return {"mime_type": self.mime_type, "bytes": self.size, "uri": self.uri}


def received_images(prompt: Any, scheme: str) -> list[ReceivedImage]:
    """The prompt's image items, each read from its file (and checked against its data)."""
    if not isinstance(prompt, list):
        return []  # prompt_text refuses it
    items = [item for item in prompt if isinstance(item, dict) and item.get("type") == "image"]
    return [_received(item, scheme) for item in items]


def _received(item: dict[str, Any], scheme: str) -> ReceivedImage:
    mime_type = item.get("mimeType")
    uri = item.get("uri")
    if not isinstance(mime_type, str) or not mime_type.startswith("image/"):
        raise MethodError(INVALID_PARAMS, "image item without an image mimeType")
    if not isinstance(uri, str) or not uri:
        raise MethodError(INVALID_PARAMS, "image item without a uri")
    content = _read(uri, scheme)
    data = item.get("data")
    if isinstance(data, str) and data:
        try:
            sent = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise MethodError(INVALID_PARAMS, "image item data is not base64") from None
        if sent != content:
            raise MethodError(INVALID_PARAMS, "image item data differs from its file")
    return ReceivedImage(mime_type, len(content), uri)


def _read(uri: str, scheme: str) -> bytes:
    parts = urlsplit(uri)
    if parts.scheme != scheme or parts.path != "/agent/file":
        raise MethodError(
            INVALID_PARAMS, f"image uri {uri[:80]!r}: this runtime reads {scheme}:///agent/file"
        )
    path = parse_qs(parts.query).get("path", [""])[0]
    if not path or not Path(path).is_absolute():
        raise MethodError(INVALID_PARAMS, "image uri path must be absolute")
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise MethodError(INVALID_PARAMS, f"image file unreadable: {exc.strerror}") from None
