"""Runs in the emulator: which connections a chat turn's pushes reach, and under which request id.

Broadcast (LINGMA_EMULATOR_BROADCAST=1, lingma-protocol.md §12.2). By default every push of a
turn goes to the connection that issued it. With the knob, each chat push (process steps, title,
chat/answer, chat/think, context usage, chat/finish, session/update) is also copied to every
other open connection (WebSocket and IPC alike). A copy is a request with an id from the
receiving connection's own counter (or a notification, with PUSH_AS_NOTIFICATION), so a client
that acks everything may ack it; the turn never waits for acks of copies. Replies to calls and
the scripted transport faults (drop, garbage, crash) stay on the issuing connection.

Off-by-one (LINGMA_EMULATOR_OFF_BY_ONE=1, §6 quirk 1, §12.6), modelled on the plausible cause
in §6.1, unacknowledged server→client requests. Legacy chat/ask only. The rule:

1. Every accepted chat/ask on a connection becomes the *successor* of the previous accepted ask
   on that connection (refused asks do not count).
2. After sending the ask's `step_start` and `step_end` pushes (as requests with ids), the turn
   waits for the client's acks of both, for at most OFF_BY_ONE_ACK_MS (default 1000 ms), a
   bound, so the outcome depends on whether the client acks rather than on who wins a race.
3. Both acked within the bound: the answer streams normally under the ask's own requestId.
   Otherwise the answer (chat/think, chat/answer deltas, context/usage/sync, chat/finish) is
   held until the ask's successor exists: at once if the next chat/ask already arrived during
   the wait, else when it arrives. Then it goes out with the successor's requestId and
   sessionId. The successor's own answer follows the same rule, so a client that never acks
   is always one answer behind, as ZipperCode reported.
4. Pushes sent as notifications (PUSH_AS_NOTIFICATION) cannot be acked, so nothing is held. A
   held answer dies with its connection, and chat/stop of the held ask ends it as cancelled.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from emulator.connection import ClientConnection

log = logging.getLogger("lingma-emulator")


@dataclass(frozen=True)
class Audience:
    """The connections a turn's pushes go to: its issuer, plus everyone when broadcasting."""

    issuer: ClientConnection
    everyone: Collection[ClientConnection] = ()  # the runtime's live connections, when broadcasting

    def _others(self) -> list[ClientConnection]:
        if not self.everyone:  # the common case: no broadcast, nothing to copy
            return []
        return [conn for conn in list(self.everyone) if conn is not self.issuer]

    async def push(
        self, method: str, params: Any, *, track_ack: bool = False
    ) -> asyncio.Future[None] | None:
        """Copies first, so whoever overhears has it queued before the issuer receives it."""
        for other in self._others():
            other.push_copy(method, params)
        return await self.issuer.push(method, params, track_ack=track_ack)

    def notify(self, method: str, params: Any) -> None:
        for other in self._others():
            other.notify(method, params)
        self.issuer.notify(method, params)


@dataclass(frozen=True)
class Attribution:
    """The request a (held) answer is delivered under."""

    request_id: str
    session_id: str


@dataclass
class AskChain:
    """Per connection: the latest accepted chat/ask, still waiting to learn its successor."""

    waiting: dict[ClientConnection, asyncio.Future[Attribution]] = field(default_factory=dict)

    def arrive(self, conn: ClientConnection, ask: Attribution) -> asyncio.Future[Attribution]:
        """`ask` was accepted on `conn`: the previous ask's successor. Returns `ask`'s own slot."""
        previous = self.waiting.get(conn)
        if previous is not None and not previous.done():
            previous.set_result(ask)
        slot: asyncio.Future[Attribution] = asyncio.get_running_loop().create_future()
        self.waiting[conn] = slot
        return slot

    def forget(self, conn: ClientConnection, slot: asyncio.Future[Attribution]) -> None:
        """The ask's stream ended: nobody will wait for its successor any more."""
        if self.waiting.get(conn) is slot:
            del self.waiting[conn]
        slot.cancel()


async def acked_within(acks: Sequence[asyncio.Future[None] | None], timeout_s: float) -> bool:
    """Did the client ack every push in time? A notification (None) needs no ack."""
    pending = [ack for ack in acks if ack is not None]
    if not pending:
        return True
    done, late = await asyncio.wait(pending, timeout=timeout_s)
    for ack in late:
        ack.cancel()
    return not late and not any(ack.cancelled() for ack in done)


async def attribution_for(
    own: Attribution,
    successor: asyncio.Future[Attribution] | None,
    acks: Sequence[asyncio.Future[None] | None],
    ack_wait_s: float,
) -> Attribution:
    """Whom the answer of `own` goes to: itself, or (off-by-one, unacked) the next ask."""
    if successor is None or await acked_within(acks, ack_wait_s):
        return own
    log.info(
        "EMULATOR off-by-one: step pushes of %s not acked within %.1f s; "
        "its answer waits for the next chat/ask on this connection",
        own.request_id,
        ack_wait_s,
    )
    target = await successor
    log.info(
        "EMULATOR off-by-one: answer of %s delivered under requestId %s",
        own.request_id,
        target.request_id,
    )
    return target
