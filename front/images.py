"""Runs in the front: images a client sends, checked and turned into `ImageInput`s.

Three API shapes arrive here: OpenAI `image_url` parts (a `data:` URL or an http(s) URL),
Anthropic `image` blocks (`source` base64 or url) and Responses `input_image` parts. Limits are
checked before anything is routed: at most MAX_IMAGES per request (400), MAX_IMAGE_BYTES each
(413), PNG/JPEG/GIF/WebP only, verified by their magic bytes (400). Only cloud-backend accounts
can pass images on (the relay routes such requests there), so nothing else decodes them.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from front.errors import ApiError, ErrorKind
from protocol.chat import ImageInput

MAX_IMAGES = 8
MAX_IMAGE_BYTES = 5 * 1024 * 1024
MAX_URL_CHARS = 8192
ALLOWED_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")
_DATA_URL = re.compile(r"data:(?P<mime>[\w.+-]+/[\w.+-]+)(?P<params>(;[^,;]*)*?);base64,", re.I)


def sniff(data: bytes) -> str:
    """The image type the bytes really are, or ""."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return ""


def _bad(message: str, param: str) -> ApiError:
    return ApiError(ErrorKind.BAD_REQUEST, message, param=param)


def from_base64(media_type: str, data: str, param: str) -> ImageInput:
    declared = media_type.strip().lower()
    if declared == "image/jpg":
        declared = "image/jpeg"
    if declared not in ALLOWED_TYPES:
        allowed = ", ".join(ALLOWED_TYPES)
        raise _bad(f"image type {media_type!r} is not supported (use {allowed})", param)
    compact = "".join(data.split())
    if len(compact) * 3 // 4 > MAX_IMAGE_BYTES + 3:
        raise ApiError(
            ErrorKind.TOO_LARGE, f"an image is larger than {MAX_IMAGE_BYTES} bytes", param=param
        )
    try:
        raw = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise _bad("image data is not valid base64", param) from None
    actual = sniff(raw)
    if not actual:
        raise _bad("image data is not a PNG, JPEG, GIF or WebP image", param)
    return ImageInput(media_type=actual, data_b64=compact)


def from_url(url: str, param: str) -> ImageInput:
    """A `data:` URL (decoded and checked) or an http(s) URL (passed on as is)."""
    text = url.strip()
    match = _DATA_URL.match(text)
    if match is not None:
        return from_base64(match.group("mime"), text[match.end() :], param)
    if text.lower().startswith("data:"):
        raise _bad("image data URLs must be base64: data:<type>;base64,<data>", param)
    if len(text) > MAX_URL_CHARS:
        raise _bad(f"image URL longer than {MAX_URL_CHARS} characters", param)
    parts = urlsplit(text)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise _bad("image URLs must be http(s) or base64 data URLs", param)
    return ImageInput(url=text)


@dataclass
class ImageCounter:
    """Counts a request's images across its messages (the per-request limit)."""

    count: int = 0

    def add(self, image: ImageInput, param: str) -> ImageInput:
        self.count += 1
        if self.count > MAX_IMAGES:
            raise _bad(f"at most {MAX_IMAGES} images per request", param)
        return image
