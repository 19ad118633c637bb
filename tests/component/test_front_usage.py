"""Component: a front's usage recorder against a real control socket (supervisor.control).

Rows reach the supervisor in batches, in order, the rest on stop; while nobody answers they
stay queued (and /healthz would say so) and go with the next batch; the supervisor's ledger
state comes back with every report, also as a heartbeat when the front has nothing to send.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from front.usage import UsageRecorder
from protocol.usage import LedgerState, UsageReply, UsageReportRequest, UsageRow
from supervisor.control import ControlServer
from tests.helpers import wait_until_async

pytestmark = pytest.mark.component


class FakeSupervisor:
    """The supervisor's side of UsageReportRequest, on a real Unix socket."""

    def __init__(self, path: Path) -> None:
        self.rows: list[UsageRow] = []
        self.reports = 0
        self.state = LedgerState.OK
        self.server = ControlServer(str(path), self.handle)

    async def handle(self, request: Any) -> UsageReply:
        assert isinstance(request, UsageReportRequest)
        self.reports += 1
        self.rows.extend(request.rows)
        return UsageReply(
            ledger=self.state, ledger_note="" if self.state is LedgerState.OK else "x"
        )


def row(n: int) -> UsageRow:
    return UsageRow(ts=float(n), key="alice", account="a", model="m", api="openai", status=200)


async def test_rows_arrive_in_order_and_the_rest_on_stop(sock_dir: Path) -> None:
    supervisor = FakeSupervisor(sock_dir / "control.sock")
    await supervisor.server.start()
    recorder = UsageRecorder(str(sock_dir / "control.sock"), front=1)
    recorder.start()
    for n in range(5):
        recorder.add(row(n))

    async def arrived() -> bool:
        return len(supervisor.rows) == 5

    await wait_until_async(arrived, 5, "the first batch")
    for n in range(5, 8):
        recorder.add(row(n))
    await recorder.stop()  # no waiting for the timer: the rest goes now
    assert [r.ts for r in supervisor.rows] == [float(n) for n in range(8)]
    assert recorder.pending == 0 and recorder.sent == 8
    await supervisor.server.close()


async def test_rows_wait_while_the_supervisor_is_away(sock_dir: Path) -> None:
    path = sock_dir / "control.sock"
    recorder = UsageRecorder(str(path), front=0)
    recorder.add(row(1))
    assert not await recorder.flush()
    assert recorder.ledger is LedgerState.DEGRADED and recorder.pending == 1
    assert recorder.health()["state"] == "degraded"
    supervisor = FakeSupervisor(path)
    await supervisor.server.start()
    recorder.add(row(2))
    assert await recorder.flush()
    assert [r.ts for r in supervisor.rows] == [1.0, 2.0] and recorder.ledger.value == "ok"
    await supervisor.server.close()


async def test_the_ledger_state_comes_back_even_without_rows(sock_dir: Path) -> None:
    supervisor = FakeSupervisor(sock_dir / "control.sock")
    await supervisor.server.start()
    supervisor.state = LedgerState.DEGRADED
    recorder = UsageRecorder(str(sock_dir / "control.sock"), front=0)
    recorder.start()

    async def heard() -> bool:
        return recorder.ledger is LedgerState.DEGRADED

    await wait_until_async(heard, 5, "a heartbeat report")
    assert supervisor.rows == [] and supervisor.reports >= 1
    await recorder.stop()
    await supervisor.server.close()


async def test_recording_off_sends_nothing(sock_dir: Path) -> None:
    recorder = UsageRecorder(str(sock_dir / "control.sock"), front=0, enabled=False)
    recorder.add(row(1))
    recorder.start()
    await recorder.stop()
    assert recorder.pending == 0 and recorder.ledger is LedgerState.OFF
