"""Runs in the worker: what an upstream chat turn yields, and the clocks that time it.

Both chat flows (worker/legacy.py, worker/acp.py) turn the runtime's pushes into the same small
events: text, thought, native tool call, context usage, end-of-turn. A chat is timed over ITS
OWN pushes only (lingma-protocol.md §3.6: a connection also carries other chats' and unrelated
pushes): first a first-token timeout, then a silence timeout once output flows.
"""

from __future__ import annotations

import asyncio
import enum
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from protocol.chat import ImageInput
from protocol.inbox import Inbox
from protocol.vocabulary import ErrorCode
from worker.routes import CLOSED_PUSH

PROMPT_DONE = "$/prompt-done"


@dataclass(frozen=True, slots=True)  # one per open chat
class Ask:
    request_id: str
    session_id: str
    question: str
    model_key: str
    mode: str  # chat | agent (the reference gateway's ask modes)
    is_reply: bool
    cwd: str
    images: tuple[ImageInput, ...] = ()  # sent beside the question (ACP only, worker/images.py)


@dataclass(frozen=True)
class Timers:
    """Every bound on one upstream turn, in seconds: the config's [lingma] timeouts
    (docs/configuration.md, through the worker's spec) and one fixed settle time."""

    call_s: float  # one JSON-RPC call (chat/ask's acceptance, set_model, ...)
    setup_s: float  # session/new + session/set_model (LP's ipcSetupTimeout, §6.13)
    first_token_s: float  # from the ask to the first output of this chat
    silence_s: float  # longest silence of this chat's own pushes once output flows
    legacy_idle_end_s: float  # legacy: silence after text that ends it (§5.3 fallback)
    stop_settle_s: float = 2.0  # after a stop or cancel: how long to wait for the finish


# The events are msgspec Structs rather than frozen dataclasses: one is made per streamed
# chunk, and a frozen dataclass's __init__ (object.__setattr__ per field) costs four times as much.


class Text(msgspec.Struct, frozen=True):
    text: str


class Overwrite(msgspec.Struct, frozen=True):
    """`chat/answer.overwrite: true`: this text replaces the answer collected so far (§5.3)."""

    text: str


class Thought(msgspec.Struct, frozen=True):
    text: str


class NativeTool(msgspec.Struct, frozen=True):
    call_id: str
    name: str
    arguments_json: str


class ContextUsage(msgspec.Struct, frozen=True):
    used_tokens: int
    limit_tokens: int


class End(msgspec.Struct, frozen=True):
    status_code: int
    reason: str
    full_answer: str = ""
    retry_after: float | None = None
    filtered: bool = False  # `chat/answer.isFiltered`: a content filter ended the answer


Event = Text | Overwrite | Thought | NativeTool | ContextUsage | End
AsyncEvents = AsyncIterator[Event]


class UpstreamFailure(Exception):
    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        session_rejected: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.session_rejected = session_rejected
        self.retry_after = retry_after


class ConnectionLost(UpstreamFailure):
    """The runtime connection ended under a chat (retried once when nothing was sent yet)."""

    def __init__(self, message: str = "Lingma connection lost mid-answer") -> None:
        super().__init__(ErrorCode.UPSTREAM_ERROR, message)


class NoAcp(Exception):
    """`session/new` failed or did not answer in time: use legacy chat/ask (AUTO flow)."""


def new_request_id() -> str:
    return uuid.uuid4().hex


class Stage(enum.Enum):
    FIRST_TOKEN = 1  # nothing of this chat's output yet
    FLOWING = 2  # output arrived: silences are timed
    IDLE_ENDS = 3  # legacy answer text arrived: a short silence ends it (§5.3 fallback)


class TurnClock:
    """When this chat has waited too long: timed over its own pushes, never anybody else's."""

    __slots__ = ("_deadline", "_timers", "stage")

    def __init__(self, timers: Timers) -> None:
        self._timers = timers
        self.stage = Stage.FIRST_TOKEN
        self._deadline = time.monotonic() + timers.first_token_s

    def remaining(self) -> float:
        return max(0.0, self._deadline - time.monotonic())

    @property
    def ends_on_silence(self) -> bool:
        """A silence now completes the answer instead of failing it (legacy, after text)."""
        return self.stage is Stage.IDLE_ENDS

    def heard(self, *, output: bool) -> None:
        """One of this chat's own pushes arrived (`output`: text, a thought or a tool call)."""
        if output and self.stage is Stage.FIRST_TOKEN:
            self.stage = Stage.FLOWING
        if self.stage is not Stage.FIRST_TOKEN:
            self._deadline = time.monotonic() + self._window()

    def idle_ends(self) -> None:
        """From now on a silence of `legacy_idle_end_s` means the answer is complete."""
        self.stage = Stage.IDLE_ENDS
        self._deadline = time.monotonic() + self._window()

    def _window(self) -> float:
        timers = self._timers
        if self.stage is Stage.IDLE_ENDS:
            return min(timers.legacy_idle_end_s, timers.silence_s)
        return timers.silence_s

    def expired(self) -> UpstreamFailure:
        if self.stage is Stage.FIRST_TOKEN:
            limit = self._timers.first_token_s
            text = f"Lingma sent no answer within {limit:.0f}s (first-token timeout)"
        else:
            text = f"Lingma sent nothing for {self._window():.0f}s"
        return UpstreamFailure(ErrorCode.UPSTREAM_TIMEOUT, text)


class PushQueue:
    """The pushes routed to one chat (worker/routes.py delivers them)."""

    __slots__ = ("_inbox",)

    def __init__(self) -> None:
        self._inbox: Inbox[tuple[str, dict[str, Any]]] = Inbox()

    def put(self, method: str, params: dict[str, Any]) -> None:
        self._inbox.put((method, params))

    async def next(self, timeout: float) -> tuple[str, dict[str, Any]] | None:
        """The next push, or None when `timeout` passed first; ConnectionLost if it ended."""
        if self._inbox:  # a burst of pushes: no silence to time, no timer to arm
            method, params = self._inbox.get_nowait()
        else:
            # asyncio.timeout, not wait_for: 3.11's wait_for drops a cancellation that races
            # with an arriving push, and then a cancelled chat keeps waiting for its answer.
            try:
                async with asyncio.timeout(timeout):
                    method, params = await self._inbox.get()
            except TimeoutError:
                return None
        if method == CLOSED_PUSH:
            raise ConnectionLost()
        return method, params


def int_or(value: Any, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: JSON's 1e999 is inf
        return default


async def settle(
    pushes: PushQueue, ends: Callable[[str, dict[str, Any]], bool], wait: float
) -> bool:
    """After a stop, read the turn out to its finish (`ends`) within `wait` seconds."""
    deadline = time.monotonic() + wait
    try:
        while (remaining := deadline - time.monotonic()) > 0:
            push = await pushes.next(remaining)
            if push is not None and ends(*push):
                return True
    except ConnectionLost:
        pass
    return False
