"""Runs in the bench's load generator: what a client task sends (targets) and what it saw."""

from __future__ import annotations

import time
from typing import NamedTuple, Protocol

import msgspec


class HttpTarget(msgspec.Struct, frozen=True, tag="http"):
    """POST `body` (GET when empty); with `marker`, count SSE chunks and time the first one."""

    url: str
    body: bytes = b""
    headers: dict[str, str] = {}
    marker: bytes = b""  # one occurrence per relayed chunk, e.g. b"data: "
    first_token: bytes = b""  # regex whose first match marks the first content token


class LingmaTarget(msgspec.Struct, frozen=True, tag="lingma"):
    """chat/ask straight to a Lingma runtime (or the emulator) over its JSON-RPC WebSocket."""

    ws_url: str
    question: str
    model: str = "auto"
    flow: str = "acp"  # acp: session/new + set_model + prompt (what a worker does); or legacy


class CloudTarget(msgspec.Struct, frozen=True, tag="cloud"):
    """A signed chat straight to a Lingma cloud API (or the emulator's cloud side), §14.

    Carries the account's decrypted credential into the generator's processes; it never leaves
    127.0.0.1 and is never written to the report.
    """

    base_url: str
    key: str
    info: str
    uid: str
    machine_id: str
    model: str
    prompt: str


Target = HttpTarget | LingmaTarget | CloudTarget


class Sample(NamedTuple):
    ok: bool
    ttft_s: float | None = None
    chunks: int = 0
    error: str = ""


class Requester(Protocol):
    async def once(self) -> Sample: ...

    async def close(self) -> None: ...


class ChunkMeter:
    """Counts relayed chunks that arrive inside the measured window.

    Long streams straddle the window's edges, so chunks are counted when they arrive, not
    when their request completes.
    """

    __slots__ = ("begin", "count", "end")

    def __init__(self) -> None:
        self.begin = float("inf")  # set by the job once its start instant is known
        self.end = float("-inf")
        self.count = 0

    def add(self, chunks: int) -> None:
        if chunks and self.begin <= time.monotonic() <= self.end:
            self.count += chunks
