"""Runs in the emulator: a chat turn's bookkeeping: pacing, usage, stop, tool verdicts, records."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from emulator.connection import ClientConnection
from emulator.settings import Knobs

log = logging.getLogger("lingma-emulator")

MIN_TICK_S = 0.02  # at high token rates, send several tokens per frame instead of sleeping more
_TOKEN = re.compile(r"\s*\S+|\s+")
CANCELLED_STATUS = 499  # our choice for a client-stopped turn (any non-200 is a failure)


class Flow(StrEnum):
    LEGACY = "legacy"
    ACP = "acp"


class TurnState(StrEnum):
    STREAMING = "streaming"
    STOPPED = "stopped"  # chat/stop or session/cancel: finish with reason `cancelled`
    DONE = "done"


@dataclass(eq=False)
class Turn:
    request_id: str
    session_id: str
    flow: Flow
    conn: ClientConnection
    state: TurnState = TurnState.STREAMING
    task: asyncio.Task[None] | None = None


@dataclass
class TurnRegistry:
    """Active turns by request id, so chat/stop and session/cancel can find them."""

    active: dict[str, Turn] = field(default_factory=dict)

    def add(self, turn: Turn) -> None:
        self.active[turn.request_id] = turn

    def finish(self, turn: Turn) -> None:
        if self.active.get(turn.request_id) is turn:
            del self.active[turn.request_id]
        if turn.state is TurnState.STREAMING:
            turn.state = TurnState.DONE

    def stop(self, turn: Turn) -> None:
        if turn.state is TurnState.STREAMING and turn.task is not None:
            turn.state = TurnState.STOPPED
            turn.task.cancel()

    def stop_request(self, request_id: str) -> bool:
        turn = self.active.get(request_id)
        if turn is None:
            return False
        self.stop(turn)
        return True

    def stop_session(self, session_id: str) -> int:
        turns = [t for t in self.active.values() if t.session_id == session_id]
        for turn in turns:
            self.stop(turn)
        return len(turns)

    def busy(self, conn: ClientConnection) -> bool:
        return any(t.conn is conn for t in self.active.values())


@dataclass
class ToolVerdicts:
    """tool/invokeResult calls that turns wait for, by toolCallId (tools module, §9.1).

    Keyed by the call id alone: the client may report on any of its connections.
    """

    waiting: dict[str, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)

    def expect(self, call_id: str) -> asyncio.Future[dict[str, Any]]:
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.waiting[call_id] = future
        return future

    def deliver(self, call_id: str, params: dict[str, Any]) -> bool:
        """False when no turn waits for `call_id` (unknown, or already timed out)."""
        future = self.waiting.pop(call_id, None)
        if future is None or future.done():
            return False
        future.set_result(params)
        return True

    def forget(self, call_id: str) -> None:
        future = self.waiting.pop(call_id, None)
        if future is not None:
            future.cancel()


@dataclass(frozen=True)
class TokenUsage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def as_wire(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "cached_tokens": 0,
        }


def log_finish(flow: Flow, request_id: str, status: int, usage: TokenUsage) -> None:
    """One line per finished turn; failures at INFO (tests grep them), successes at DEBUG."""
    level = logging.DEBUG if status == 200 else logging.INFO
    log.log(
        level,
        "EMULATOR [TOKEN_USAGE]: %s finish %s chat answer requestId: %s status: %d",
        usage.as_wire(),
        flow.value,
        request_id,
        status,
    )


def estimate_tokens(text: str) -> int:
    """Roughly four characters per token, like the usual BPE vocabularies on English text."""
    return (len(text) + 3) // 4


def usage_for(prompt: str, answer: str) -> TokenUsage:
    return TokenUsage(
        prompt_tokens=max(1, estimate_tokens(prompt)), completion_tokens=estimate_tokens(answer)
    )


def split_evenly(text: str, count: int) -> list[str]:
    """`text` in at most `count` consecutive pieces (instant mode: few frames, no sleeps)."""
    if not text:
        return []
    size = max(1, -(-len(text) // count))
    return [text[i : i + size] for i in range(0, len(text), size)]


async def sleep_ms(milliseconds: float) -> None:
    if milliseconds > 0:
        await asyncio.sleep(milliseconds / 1000)


async def paced_chunks(text: str, knobs: Knobs, pause_ms: int = 0) -> AsyncIterator[str]:
    """Yield the answer in pieces: instant (a handful of chunks), at TOKENS_PER_S, or (a rule's
    `chunk_delay_ms`) one token at a time with that pause between two."""
    if pause_ms > 0:
        for step, token in enumerate(_TOKEN.findall(text)):
            if step:
                await sleep_ms(pause_ms)
            yield token
        return
    if knobs.tokens_per_s <= 0:
        for piece in split_evenly(text, knobs.instant_chunks):
            yield piece
        return
    tokens = _TOKEN.findall(text)
    tick = max(1 / knobs.tokens_per_s, MIN_TICK_S)
    per_tick = max(1, round(knobs.tokens_per_s * tick))
    loop = asyncio.get_running_loop()
    started = loop.time()
    for step, start in enumerate(range(0, len(tokens), per_tick)):
        if step:
            await asyncio.sleep(max(0.0, started + step * tick - loop.time()))
        yield "".join(tokens[start : start + per_tick])


@dataclass(frozen=True)
class Recorder:
    """LINGMA_EMULATOR_RECORD: one JSON line per chat request, for tests to inspect.

    The tools module adds one line per tool/invoke verdict, marked `"event": "tool"` (chat lines
    carry no `event` key), so a test can see what the client answered.
    """

    path: Path | None

    def record(
        self,
        *,
        flow: Flow,
        session_id: str,
        mode: str,
        model: str,
        text: str,
        request_id: str,
        accepted: bool,
        extra: dict[str, Any] | None = None,
    ) -> None:
        """`extra`: what only some requests carry (an ACP prompt's images)."""
        self._write(
            {
                "flow": flow.value,
                "session_id": session_id,
                "mode": mode,
                "model": model,
                "text": text,
                "request_id": request_id,
                "accepted": accepted,
                **(extra or {}),
            }
        )

    def record_tool(
        self,
        *,
        flow: Flow,
        session_id: str,
        request_id: str,
        tool: dict[str, Any],
    ) -> None:
        self._write(
            {
                "event": "tool",
                "flow": flow.value,
                "session_id": session_id,
                "request_id": request_id,
                **tool,
            }
        )

    def write_event(self, fields: dict[str, Any]) -> None:
        """Any other line, marked by its own `event` key (the cloud side's requests)."""
        self._write(fields)

    def _write(self, fields: dict[str, Any]) -> None:
        if self.path is None:
            return
        line = json.dumps({"ts": round(time.time(), 3), **fields}, ensure_ascii=False)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(line + "\n")
