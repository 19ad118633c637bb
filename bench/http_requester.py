"""Runs in the bench's load generator: a client task's HTTP requests to an `HttpTarget`.

Over a shared keep-alive session; for streams it counts SSE chunks as they arrive and times the
first token. The signed cloud client (bench/cloud_direct.py) sends through it with its own
body and headers per request.
"""

from __future__ import annotations

import re
import time

import aiohttp

from bench.targets import ChunkMeter, HttpTarget, Sample


class HttpRequester:
    """One client task's HTTP requests over a shared keep-alive session."""

    def __init__(
        self, target: HttpTarget, session: aiohttp.ClientSession, meter: ChunkMeter
    ) -> None:
        self.target = target
        self.session = session
        self.meter = meter
        self.first_token = re.compile(target.first_token) if target.first_token else None

    async def once(self, body: bytes = b"", headers: dict[str, str] | None = None) -> Sample:
        """One request; `body` and `headers` replace the target's when given."""
        target = self.target
        body = body or target.body
        method = "POST" if body else "GET"
        started = time.monotonic()
        async with self.session.request(
            method, target.url, data=body or None, headers=headers or target.headers
        ) as response:
            if not target.marker:
                body = await response.read()
                if response.status != 200:
                    return Sample(False, error=f"HTTP {response.status}: {body[:160]!r}")
                return Sample(True)
            return await self._read_stream(response, started)

    async def _read_stream(self, response: aiohttp.ClientResponse, started: float) -> Sample:
        marker = self.target.marker
        ttft: float | None = None
        chunks = 0
        carry = b""
        keep = len(marker) - 1
        async for block in response.content.iter_any():
            # A tail shorter than the marker holds no whole marker, so prefixing it to the next
            # read counts a marker split between two reads exactly once.
            data = carry + block
            found = data.count(marker)
            chunks += found
            self.meter.add(found)
            carry = data[len(data) - keep :] if keep else b""
            if ttft is None and self.first_token is not None and self.first_token.search(data):
                ttft = time.monotonic() - started
        if response.status != 200:
            return Sample(False, error=f"HTTP {response.status}")
        if chunks == 0:
            return Sample(False, error="stream ended without a chunk")
        return Sample(True, ttft_s=ttft, chunks=chunks)

    async def close(self) -> None:
        return None
