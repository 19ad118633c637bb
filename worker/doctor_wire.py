"""Runs in `lingma-gw doctor`: what the probe connections received, and how to wait for it.

Every message in or out goes to the redacted transcript; incoming ones are also kept here, in
order, tagged with their connection, so a probe can wait for one and read the rest afterwards.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from worker.routes import push_request_id
from worker.transcript import Transcript

Message = dict[str, Any]


class Finding(msgspec.Struct, frozen=True):
    question: str
    answer: str
    evidence: str = ""


@dataclass
class Seen:
    conn: str
    message: Message


@dataclass
class ProbeWire:
    """Every message the doctor's connections received, and a way to wait for one."""

    transcript: Transcript
    seen: list[Seen] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def tap(self, conn: str) -> Callable[[str, Message], None]:
        def record(direction: str, message: Message) -> None:
            self.transcript.record(conn, direction, message)
            if direction == "in":
                self.seen.append(Seen(conn, message))
                self.changed.set()

        return record

    async def until(self, match: Callable[[Seen], bool], timeout: float) -> Seen | None:
        deadline = time.monotonic() + timeout
        checked = 0
        while True:
            for seen in self.seen[checked:]:
                if match(seen):
                    return seen
            checked = len(self.seen)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self.changed.clear()
            try:
                async with asyncio.timeout(remaining):
                    await self.changed.wait()
            except TimeoutError:
                return None

    def pushes(self, since: int = 0) -> list[Seen]:
        return [s for s in self.seen[since:] if isinstance(s.message.get("method"), str)]


def params_of(seen: Seen) -> Message:
    params = seen.message.get("params")
    return params if isinstance(params, dict) else {}


def is_acp_finish(seen: Seen, request_id: str) -> bool:
    params = params_of(seen)
    if seen.message.get("method") == "chat/finish":
        return params.get("requestId") == request_id
    update = params.get("update")
    return (
        seen.message.get("method") == "session/update"
        and push_request_id(params) == request_id
        and isinstance(update, dict)
        and update.get("type") == "chat_finish"
    )
