"""Runs in the worker: a chat's images as the runtime takes them — files, and ACP prompt items.

Done as lingma-proxy does it (`runPromptLocked`; lingma-protocol.md §5.4, [S]): each image is
written to a file the runtime can read and goes into `session/prompt` as
`{type: "image", mimeType, uri, data}`, `uri` being `lingma:///agent/file?path=<query-escaped
absolute path>` (QoderCN spells the scheme `qodercn`, §5.4 [C]: `[lingma] image_uri_scheme`),
the same items mirrored in `contextParams`. The files live in the account's work dir
(`images/`, private to the gateway's user) and are removed once the turn is over, whatever its
outcome. The legacy flow (§5.3) is not given images: its `extra.context[]` image item is known
from one re-implementation's field list only, with no word on what `content` holds, so a
legacy account refuses an image chat with a 400 that says why, and the front tries an account
that can take it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

from protocol.chat import ImageInput, Message

log = logging.getLogger(__name__)

EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/gif": "gif", "image/webp": "webp"}
LEGACY_REFUSAL = (
    "image input needs the runtime's ACP chat flow (session/prompt image items, "
    "lingma-protocol.md §5.4): this account chats through legacy chat/ask, whose image context "
    'item has no documented format (§5.3); use chat_flow = "auto" or "acp" on a runtime '
    'that has session/new, or an account with backend = "cloud"'
)


def prompt_images(messages: Sequence[Message]) -> list[ImageInput]:
    """The images to send with these messages, in order (the ones with their bytes)."""
    return [image for m in messages for image in m.images if image.data_b64]


def legacy_refusal(messages: Sequence[Message]) -> str | None:
    """Why a legacy chat/ask cannot carry this conversation, or None."""
    return LEGACY_REFUSAL if prompt_images(messages) else None


def file_uri(scheme: str, path: Path) -> str:
    """`<scheme>:///agent/file?path=<path>`, escaped as Go's url.QueryEscape does (LP)."""
    return f"{scheme}:///agent/file?path={quote_plus(str(path), safe='')}"


@dataclass(frozen=True)
class PromptImage:
    mime_type: str
    data_b64: str
    uri: str

    def item(self) -> dict[str, Any]:
        return {"type": "image", "mimeType": self.mime_type, "uri": self.uri, "data": self.data_b64}


class ImageFiles:
    """Where a worker's chats put their images for the runtime, and how it names them."""

    def __init__(self, directory: Path, scheme: str) -> None:
        self.directory = directory
        self.scheme = scheme

    @contextlib.asynccontextmanager
    async def staged(
        self, request_id: str, images: Sequence[ImageInput]
    ) -> AsyncIterator[list[PromptImage]]:
        """The images as prompt items, their files on disk until the block ends."""
        if not images:
            yield []
            return
        paths = [self._path(request_id, n, image) for n, image in enumerate(images, 1)]
        try:
            await asyncio.to_thread(self._write, paths, images)
            yield [
                PromptImage(image.media_type, image.data_b64, file_uri(self.scheme, path))
                for path, image in zip(paths, images, strict=True)
            ]
        finally:
            await asyncio.to_thread(_remove, paths)

    def _path(self, request_id: str, number: int, image: ImageInput) -> Path:
        extension = EXTENSIONS.get(image.media_type, "img")
        return (self.directory / f"{request_id}-{number}.{extension}").absolute()

    def _write(self, paths: Sequence[Path], images: Sequence[ImageInput]) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        for path, image in zip(paths, images, strict=True):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(base64.b64decode(image.data_b64))


def _remove(paths: Sequence[Path]) -> None:
    for path in paths:
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:  # the turn's outcome stands either way
            log.warning("could not remove image file %s: %s", path.name, exc)
