"""A real worker deletes the upstream sessions it will never continue (§11.7), and only those.

The emulator's own session list (`chat/listAllSessions`, asked over a separate connection) is
the witness: a session the cache keeps for the next turn stays; one from a failed chat, from a
worker without session reuse, or one the cache evicts is deleted in the background.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from protocol.chat import Message
from tests.component.emulator_support import connect
from tests.component.worker_support import (
    WorkerProcess,
    chat,
    log_in,
    make_spec,
    ready_client,
    start_worker,
    user,
)
from tests.helpers import ChildProcesses, wait_until_async

pytestmark = pytest.mark.component


def start(root: Path, **overrides: Any) -> tuple[ChildProcesses, WorkerProcess]:
    children = ChildProcesses()
    process = start_worker(children, make_spec(root, **overrides), root)
    asyncio.run(log_in(process))
    return children, process


@pytest.fixture(scope="module")
def keeping() -> Iterator[WorkerProcess]:
    """Session reuse on, a cache of two entries (so a third conversation evicts the first)."""
    root = Path(tempfile.mkdtemp(prefix="lgw-", dir="/tmp"))
    children, process = start(root, session_cache_max_entries=2)
    try:
        yield process
    finally:
        children.kill_all()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def forgetting() -> Iterator[WorkerProcess]:
    root = Path(tempfile.mkdtemp(prefix="lgw-", dir="/tmp"))
    children, process = start(root, session_reuse=False)
    try:
        yield process
    finally:
        children.kill_all()
        shutil.rmtree(root, ignore_errors=True)


async def upstream_sessions(process: WorkerProcess) -> set[str]:
    """The session ids the worker's emulator still holds."""
    info = json.loads((Path(process.spec.work_dir) / ".info.json").read_text())
    async with aiohttp.ClientSession() as http:
        client = await connect(http, f"ws://127.0.0.1:{info['websocketPort']}/")
        try:
            listed = await client.call("chat/listAllSessions", {})
        finally:
            await client.close()
    return {str(s.get("sessionId") or s.get("id")) for s in listed}


async def eventually_gone(process: WorkerProcess, session_id: str) -> None:
    async def gone() -> bool:
        return session_id not in await upstream_sessions(process)

    await wait_until_async(gone, 10.0, f"session {session_id} to be deleted upstream")


async def test_a_kept_session_stays_and_a_failed_chat_s_session_is_deleted(
    keeping: WorkerProcess,
) -> None:
    async with ready_client(keeping) as client:  # (which resets the script)
        keeping.set_script([{"match": "explode", "error": {"status": 500, "message": "boom"}}])
        kept = (await chat(client, "remember me")).finish.upstream_session
        failed = await chat(client, "please explode")
    assert failed.failure is not None
    failed_session = keeping.records()[-1]["session_id"]
    assert failed_session and failed_session != kept
    await eventually_gone(keeping, failed_session)
    assert kept in await upstream_sessions(keeping)  # the next turn will continue it


async def test_the_cache_s_evictions_are_deleted_upstream(keeping: WorkerProcess) -> None:
    async with ready_client(keeping) as client:
        first = await chat(client, "conversation one")
        sessions = [first.finish.upstream_session]
        for text in ("conversation two", "conversation three"):  # the cache holds two
            sessions.append((await chat(client, text)).finish.upstream_session)
        await eventually_gone(keeping, sessions[0])
        assert set(sessions[1:]) <= await upstream_sessions(keeping)
        # The evicted conversation is no longer continued: its next turn opens a new session.
        history = [user("conversation one"), Message(role="assistant", text=first.text)]
        follow_up = await chat(client, [*history, user("and then?")])
    assert not follow_up.finish.session_reused
    assert follow_up.finish.upstream_session not in sessions


async def test_without_session_reuse_every_session_is_deleted(
    forgetting: WorkerProcess,
) -> None:
    async with ready_client(forgetting) as client:
        results = [await chat(client, f"one-off {n}") for n in range(3)]
    for result in results:
        assert not result.finish.session_reused
        await eventually_gone(forgetting, result.finish.upstream_session)
