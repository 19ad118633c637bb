"""Runs in the worker: when a chat must be over, for both backends (runtime and cloud).

The request's own deadline (the front's total cap for its kind) when it names one, else the
worker's copy of the same caps: `stream_timeout_s` for a streamed chat, `request_timeout_s` for
one answered in a single body; 0 means none. A chat without a total cap runs as long as it
produces; its first-token and silence timeouts (the cloud's read timeout) end it when it stalls.
"""

from __future__ import annotations

import asyncio
import time

from protocol.chat import ChatRequest
from protocol.specs import WorkerSpec


def chat_deadline(request: ChatRequest, spec: WorkerSpec) -> float | None:
    """Event-loop time the chat must end by, or None for no total cap."""
    loop_now = asyncio.get_running_loop().time()
    if request.deadline > 0:
        return loop_now + (request.deadline - time.time())
    cap = spec.stream_timeout_s if request.stream else spec.request_timeout_s
    return loop_now + cap if cap > 0 else None
