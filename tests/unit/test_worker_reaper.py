"""Throw-away sessions are deleted in batches: at most BATCH calls in flight, each one once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

import pytest

from worker.reaper import BATCH, DELETE, DeleteOutcome, SessionReaper

pytestmark = pytest.mark.unit


class FakeClient:
    """Records deletions and how many ran at once; every call waits until released."""

    def __init__(self) -> None:
        self.deleted: list[str] = []
        self.running = 0
        self.most_at_once = 0
        self.release = asyncio.Event()

    async def call(self, method: str, params: dict[str, Any], timeout: float) -> Any:
        assert method == DELETE
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        await self.release.wait()
        self.running -= 1
        self.deleted.append(params["sessionId"])
        return {"success": True}


async def turns_until(condition: Callable[[], bool], turns: int = 1000) -> None:
    """Let the loop run until `condition` holds, for at most `turns` turns."""
    for _ in range(turns):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the reaper did not get there")


async def test_a_backlog_goes_in_batches_and_every_session_once() -> None:
    client = FakeClient()
    outcomes: list[DeleteOutcome] = []
    reaper = SessionReaper(
        lambda: (cast(Any, client), 1), timeout_s=1.0, on_outcome=outcomes.append, linger_s=0.0
    )
    sessions = [f"s{n}" for n in range(BATCH + 4)]
    for session in sessions:
        reaper.discard(session, 1)
    reaper.discard("of-an-earlier-binary", 0)
    reaper.start()
    try:
        await turns_until(lambda: client.running == BATCH)
        assert client.most_at_once == BATCH
        client.release.set()
        await turns_until(lambda: len(outcomes) == len(sessions) + 1)
    finally:
        await reaper.stop()
    assert sorted(client.deleted) == sorted(sessions)
    assert outcomes.count(DeleteOutcome.DELETED) == len(sessions)
    assert outcomes.count(DeleteOutcome.STALE) == 1
