"""Runs in the front: one usage row per chat request, sent to the supervisor in batches.

Recording is an append to a list on the request path; a background task sends what gathered
every `FLUSH_EVERY_S` to the supervisor's control socket (`UsageReportRequest`), and the front's
shutdown sends the rest after its last request ended, so a drain (SIGTERM, reload handover)
loses nothing. Rows the supervisor cannot take stay here, bounded, and go with the next batch.
The supervisor's reply says whether its database writes succeed: /healthz shows that.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

from front.keys import KeyGate, key_name
from front.supervisor_link import ask_supervisor
from protocol.usage import LedgerState, UsageReply, UsageReportRequest, UsageRow

if TYPE_CHECKING:
    from front.pipeline import Outcome
    from front.plan import ChatPlan, RequestMeta

log = logging.getLogger(__name__)

FLUSH_EVERY_S = 0.5
HEARTBEAT_S = 2.0  # an empty report this often: /healthz learns the ledger's state even idle
FLUSH_TIMEOUT_S = 3.0
MAX_BATCH = 10_000  # rows per frame: far below MAX_FRAME
MAX_PENDING = 200_000  # rows kept while the supervisor does not take them (about 40 MB)


class UsageRecorder:
    def __init__(self, control_socket: str, front: int, *, enabled: bool = True) -> None:
        self._control_socket = control_socket
        self.front = front
        self.enabled = enabled
        self._rows: list[UsageRow] = []
        self._task: asyncio.Task[None] | None = None
        self.sent = 0
        self.dropped = 0
        self.ledger = LedgerState.OK if enabled else LedgerState.OFF
        self.ledger_note = ""

    @property
    def pending(self) -> int:
        return len(self._rows)

    def add(self, row: UsageRow) -> None:
        if not self.enabled:
            return
        rows = self._rows
        rows.append(row)
        if len(rows) > MAX_PENDING:
            excess = len(rows) - MAX_PENDING
            del rows[:excess]
            self.dropped += excess

    def start(self) -> None:
        if self.enabled and self._task is None:
            self._task = asyncio.create_task(self._run(), name="usage-flush")

    async def stop(self) -> None:
        """After the last request: cancel the timer and send everything that is left."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._rows and not await self.flush():
            log.warning("usage: %d rows could not reach the supervisor at exit", len(self._rows))

    async def _run(self) -> None:
        reported_at = time.monotonic()
        while True:
            await asyncio.sleep(FLUSH_EVERY_S)
            if self._rows or time.monotonic() - reported_at >= HEARTBEAT_S:
                reported_at = time.monotonic()
                await self.flush(heartbeat=True)

    async def flush(self, *, heartbeat: bool = False) -> bool:
        """Send every pending row (or one empty report as a heartbeat); False (rows kept) when
        the supervisor did not take them."""
        first = True
        while self._rows or (heartbeat and first):
            first = False
            batch = self._rows[:MAX_BATCH]
            reply = await ask_supervisor(
                self._control_socket, UsageReportRequest(rows=batch), FLUSH_TIMEOUT_S
            )
            if not isinstance(reply, UsageReply):
                self._set_ledger(LedgerState.DEGRADED, "the supervisor did not take usage rows")
                return False
            del self._rows[: len(batch)]  # rows added meanwhile were appended after the batch
            self.sent += len(batch)
            self._set_ledger(reply.ledger, reply.ledger_note)
        return True

    def _set_ledger(self, state: LedgerState, note: str) -> None:
        if state != self.ledger:
            level = logging.INFO if state is LedgerState.OK else logging.WARNING
            log.log(level, "usage ledger %s%s", state.value, f": {note}" if note else "")
        self.ledger, self.ledger_note = state, note

    def health(self) -> dict[str, object]:
        return {"state": self.ledger.value, "note": self.ledger_note, "pending": self.pending}


def settle(
    recorder: UsageRecorder,
    *,
    gate: KeyGate,
    meta: RequestMeta,
    plan: ChatPlan,
    status: int,
    outcome: Outcome | None,
) -> None:
    """A chat request ended (any way): free its key's slot, count its tokens, record it."""
    tokens = outcome.total_tokens if outcome is not None else 0
    gate.release(meta.ticket, tokens)
    meta.ticket = None
    if not recorder.enabled:
        return
    latency_s = asyncio.get_running_loop().time() - meta.started
    recorder.add(
        UsageRow(
            ts=time.time() - latency_s,
            key=key_name(meta.key),
            account=meta.served_by,
            model=(outcome.model if outcome is not None else "") or plan.model,
            api=plan.api.value,
            status=status,
            prompt_tokens=outcome.prompt_tokens if outcome is not None else 0,
            completion_tokens=outcome.completion_tokens if outcome is not None else 0,
            latency_ms=round(latency_s * 1000, 3),
            ttft_ms=outcome.first_token_ms if outcome is not None else None,
            session_reused=outcome.session_reused if outcome is not None else False,
            front=recorder.front,
            request_id=meta.request_id,
        )
    )
