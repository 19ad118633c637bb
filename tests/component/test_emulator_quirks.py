"""lingma-emulator quirk knobs: off-by-one answers, broadcast pushes, the machine token, and
session/load — each with the knob (the behaviour happens) and without it (it does not), through
the plain JSON-RPC harness, plus a real worker over an emulator with broadcast and the token on.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from emulator.store import WorkDir
from tests.component.emulator_support import (
    Emulator,
    RpcClient,
    acp_finished,
    acp_updates,
    answer_text,
    connect,
    finished,
    legacy_ask,
    logged_in_work_dir,
    short_dir,
    start_emulator,
)
from tests.component.worker_support import WorkerProcess, chat, log_in, make_spec, start_worker
from tests.component.worker_support import ready_client as ready_worker_client
from tests.helpers import ChildProcesses, wait_until_async

pytestmark = pytest.mark.component

OFF_BY_ONE = {"LINGMA_EMULATOR_OFF_BY_ONE": "1"}
BROADCAST = {"LINGMA_EMULATOR_BROADCAST": "1"}
TOKEN = {"LINGMA_EMULATOR_REQUIRE_MACHINE_TOKEN": "1"}
KNOWN_TOKEN = "tok-known-to-the-test"
TOKEN_HEADER = "Cosy-MachineToken"
CHAT_PUSHES = {"chat/process_step_callback", "chat/answer", "chat/finish", "session/update"}
# Behind a real worker: both knobs, and a first-token delay so two concurrent chats overlap.
WORKER_EMULATOR = {**BROADCAST, **TOKEN, "LINGMA_EMULATOR_FIRST_TOKEN_MS": "500"}


@pytest.fixture(scope="module")
def root() -> Iterator[Path]:
    path = short_dir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def emulators(root: Path) -> Iterator[dict[str, Emulator]]:
    """One emulator without knobs and one per knob, shared by the module."""
    registry = ChildProcesses()
    token_dir = logged_in_work_dir(root / "token", "quirks")
    (token_dir / "cache" / "machine_token.json").write_text(json.dumps({"token": KNOWN_TOKEN}))
    try:
        yield {
            "plain": start_emulator(registry, logged_in_work_dir(root / "plain", "quirks")),
            "off_by_one": start_emulator(
                registry, logged_in_work_dir(root / "obo", "quirks"), env=OFF_BY_ONE
            ),
            "broadcast": start_emulator(
                registry, logged_in_work_dir(root / "bcast", "quirks"), env=BROADCAST
            ),
            "token": start_emulator(registry, token_dir, env=TOKEN),
        }
    finally:
        registry.kill_all()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def connect_with(http: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> RpcClient:
    ws = await http.ws_connect(url, headers=headers, timeout=aiohttp.ClientWSTimeout(ws_close=2.0))
    client = RpcClient(ws)
    client.start()
    return client


def step(request_id: str, name: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: (
        e["method"] == "chat/process_step_callback"
        and e["params"].get("requestId") == request_id
        and e["params"].get("step") == name
    )


def request_of(event: dict[str, Any]) -> str:
    """The request a push belongs to, in either flow's shape ("" when it names none)."""
    params = event.get("params") or {}
    meta = params.get("_meta") or {}
    return str(params.get("requestId") or meta.get("ai-coding/request-id") or "")


# --------------------------------------------------------------------------- off-by-one


async def test_off_by_one_gives_an_unacked_answer_to_the_next_ask(
    emulators: dict[str, Emulator], http: aiohttp.ClientSession
) -> None:
    client = await connect(http, emulators["off_by_one"].ws_url, ack=False)
    await client.call("chat/ask", legacy_ask("obo-real", "the real question", session_id="s-o"))
    await client.wait_for(step("obo-real", "step_end"))  # ZipperCode's workaround, step by step
    await client.call("chat/ask", legacy_ask("obo-throwaway", "OK", session_id="s-o"))
    finish = (await client.wait_for(finished("obo-throwaway"), timeout=10))["params"]
    assert "You said: the real question" in finish["fullAnswer"]
    assert "You said: the real question" in answer_text(client, "obo-throwaway")
    assert finish["sessionId"] == "s-o" and finish["statusCode"] == 200
    assert client.of("chat/answer", "obo-real") == client.of("chat/finish", "obo-real") == []
    await client.call("ping")  # everything sent before this reply has been read by now
    assert "You said: OK" not in json.dumps(client.events)  # held for the ask after it
    await client.close()


async def test_off_by_one_spares_a_client_that_acks_every_push(
    emulators: dict[str, Emulator], http: aiohttp.ClientSession
) -> None:
    client = await connect(http, emulators["off_by_one"].ws_url)
    for request_id, text in (("ack-1", "first"), ("ack-2", "second")):
        await client.call("chat/ask", legacy_ask(request_id, text, session_id="s-ack"))
        finish = (await client.wait_for(finished(request_id), timeout=10))["params"]
        assert f"You said: {text}" in finish["fullAnswer"] == answer_text(client, request_id)
    await client.close()


async def test_without_off_by_one_an_unacked_answer_keeps_its_own_id(
    emulators: dict[str, Emulator], http: aiohttp.ClientSession
) -> None:
    client = await connect(http, emulators["plain"].ws_url, ack=False)
    await client.call("chat/ask", legacy_ask("own-1", "mine", session_id="s-own"))
    finish = (await client.wait_for(finished("own-1")))["params"]
    assert "You said: mine" in finish["fullAnswer"] == answer_text(client, "own-1")
    await client.close()


# --------------------------------------------------------------------------- broadcast


async def test_broadcast_copies_chat_pushes_to_every_connection(
    emulators: dict[str, Emulator], http: aiohttp.ClientSession
) -> None:
    url = emulators["broadcast"].ws_url
    asker, bystander = await connect(http, url), await connect(http, url)
    await asker.call("chat/ask", legacy_ask("bc-1", "shout", session_id="s-bc"))
    await asker.wait_for(finished("bc-1"))
    heard = (await bystander.wait_for(finished("bc-1")))["params"]
    assert "You said: shout" in heard["fullAnswer"] == answer_text(bystander, "bc-1")
    assert all(isinstance(e.get("id"), int) for e in bystander.events)  # its own push ids
    sid = (await asker.call("session/new", {"cwd": "/tmp", "mcpServers": []}))["sessionId"]
    meta = {"ai-coding/request-id": "bc-acp"}
    prompt = {"sessionId": sid, "prompt": [{"type": "text", "text": "hi all"}], "_meta": meta}
    await asker.call("session/prompt", prompt)
    await asker.wait_for(acp_finished("bc-acp"))
    await bystander.wait_for(acp_finished("bc-acp"))
    assert acp_updates(bystander, "bc-acp") == acp_updates(asker, "bc-acp") != []
    await asker.close()
    await bystander.close()


async def test_without_broadcast_pushes_reach_only_the_issuer(
    emulators: dict[str, Emulator], http: aiohttp.ClientSession
) -> None:
    url = emulators["plain"].ws_url
    asker, bystander = await connect(http, url), await connect(http, url)
    await asker.call("chat/ask", legacy_ask("solo-1", "whisper", session_id="s-solo"))
    await asker.wait_for(finished("solo-1"))
    # A copy would have been queued for the bystander before the asker's own push, so it would
    # arrive before this reply.
    await bystander.call("ping")
    assert [e for e in bystander.events if e["method"] in CHAT_PUSHES] == []
    await asker.close()
    await bystander.close()


# --------------------------------------------------------------------------- machine token


async def test_machine_token_is_required_when_the_knob_is_on(
    emulators: dict[str, Emulator], http: aiohttp.ClientSession
) -> None:
    emu = emulators["token"]
    assert WorkDir(emu.work_dir).machine_token() == KNOWN_TOKEN  # an existing token is kept
    for headers in ({}, {TOKEN_HEADER: "wrong"}):
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(emu.ws_url, headers=headers)
        assert refused.value.status == 401
    client = await connect_with(http, emu.ws_url, {TOKEN_HEADER: KNOWN_TOKEN})
    assert await client.call("ping") == {"success": True}
    await client.close()


async def test_without_the_knob_no_token_is_needed_or_written(
    emulators: dict[str, Emulator], http: aiohttp.ClientSession
) -> None:
    emu = emulators["plain"]
    client = await connect(http, emu.ws_url)
    assert await client.call("ping") == {"success": True}
    assert not (emu.work_dir / "cache" / "machine_token.json").exists()
    await client.close()


# --------------------------------------------------------------------------- session/load


async def test_session_load_replays_the_stored_turns(
    emulators: dict[str, Emulator], http: aiohttp.ClientSession
) -> None:
    url = emulators["plain"].ws_url
    writer = await connect(http, url)
    sid = (await writer.call("session/new", {"cwd": "/tmp", "mcpServers": []}))["sessionId"]
    for request_id, text in (("load-1", "first turn"), ("load-2", "second turn")):
        meta = {"ai-coding/request-id": request_id}
        prompt = [{"type": "text", "text": text}]
        await writer.call("session/prompt", {"sessionId": sid, "prompt": prompt, "_meta": meta})
        await writer.wait_for(acp_finished(request_id))
    await writer.close()
    reader = await connect(http, url)  # a new connection, as after a client restart
    load = {"sessionId": sid, "cwd": "/tmp", "mcpServers": [], "timestamp": 1, "_meta": {}}
    assert await reader.call("session/load", load) == {}
    replay = [
        (request_of(e), e["params"]["update"]["sessionUpdate"], e["params"]["update"]["content"])
        for e in reader.events
        if e["method"] == "session/update" and e["params"]["sessionId"] == sid
    ]
    kinds = [(rid, kind) for rid, kind, _ in replay]
    assert kinds == [
        ("load-1", "user_message_chunk"),
        ("load-1", "agent_message_chunk"),
        ("load-2", "user_message_chunk"),
        ("load-2", "agent_message_chunk"),
    ]
    texts = [content["text"] for _, _, content in replay]
    assert texts[0] == "first turn" and "You said: first turn" in texts[1]
    assert texts[2] == "second turn" and "You said: second turn" in texts[3]
    missing = await reader.request("session/load", {**load, "sessionId": "no-such-session"})
    assert missing["error"]["code"] == -32602 and "session not found" in missing["error"]["message"]
    await reader.close()


async def test_session_load_replays_a_legacy_session_too(
    emulators: dict[str, Emulator], http: aiohttp.ClientSession
) -> None:
    client = await connect(http, emulators["plain"].ws_url)
    await client.call("chat/ask", legacy_ask("leg-1", "legacy turn", session_id="s-legacy"))
    await client.wait_for(finished("leg-1"))
    client.events.clear()
    assert await client.call("session/load", {"sessionId": "s-legacy", "cwd": "/tmp"}) == {}
    updates = [e["params"]["update"] for e in client.events if e["method"] == "session/update"]
    texts = [u["content"]["text"] for u in updates]
    assert len(texts) == 2 and texts[0] == "legacy turn" and "You said: legacy turn" in texts[1]
    await client.close()


# --------------------------------------------------------------------------- a real worker


@pytest.fixture(scope="module", params=["acp", "legacy"])
def worker(request: pytest.FixtureRequest) -> Iterator[WorkerProcess]:
    """A worker whose emulator broadcasts and demands the token, over either chat flow."""
    root = Path(tempfile.mkdtemp(prefix="lgw-", dir="/tmp"))
    children = ChildProcesses()
    env = dict(WORKER_EMULATOR)
    if request.param == "legacy":
        env["LINGMA_EMULATOR_NO_ACP"] = "1"
    try:
        process = start_worker(children, make_spec(root, env=env, max_concurrency=2), root)
        asyncio.run(log_in(process))  # the worker's own connection already needed the token
        yield process
    finally:
        children.kill_all()
        shutil.rmtree(root, ignore_errors=True)


def worker_emulator(process: WorkerProcess) -> tuple[str, dict[str, str]]:
    """The URL of the worker's emulator and the token header its work dir holds."""
    work_dir = Path(process.spec.work_dir)
    port = json.loads((work_dir / ".info.json").read_text())["websocketPort"]
    token = WorkDir(work_dir).machine_token()
    assert token  # written at start: the work dir had none
    return f"ws://127.0.0.1:{port}/", {TOKEN_HEADER: token}


def is_turn_end(event: dict[str, Any]) -> bool:
    """chat/finish (legacy) or session/update chat_finish (ACP)."""
    update = (event.get("params") or {}).get("update") or {}
    return event["method"] == "chat/finish" or (
        event["method"] == "session/update" and update.get("type") == "chat_finish"
    )


async def test_worker_chats_with_the_machine_token_and_strangers_are_refused(
    worker: WorkerProcess, http: aiohttp.ClientSession
) -> None:
    async with ready_worker_client(worker) as mux:
        result = await chat(mux, "token check")
    assert "You said: token check" in result.text
    url, _ = worker_emulator(worker)
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await http.ws_connect(url)
    assert refused.value.status == 401


async def test_concurrent_worker_chats_each_get_their_own_answer_under_broadcast(
    worker: WorkerProcess, http: aiohttp.ClientSession
) -> None:
    async with ready_worker_client(worker) as first, ready_worker_client(worker) as second:
        # One chat first, so AUTO has settled on its flow: two concurrent *first* chats on a
        # runtime without ACP race in the worker (the loser fails with "no ACP session/new").
        assert "You said: warm-up" in (await chat(first, "warm-up")).text
        observer = await connect_with(http, *worker_emulator(worker))
        alpha, bravo = await asyncio.gather(
            chat(first, "alpha question"), chat(second, "bravo question")
        )
    assert "You said: alpha question" in alpha.text and "bravo" not in alpha.text
    assert "You said: bravo question" in bravo.text and "alpha" not in bravo.text
    assert alpha.finish.served_by == bravo.finish.served_by == "acct-a"
    # The observer overheard both turns (so each worker connection heard the other's), and
    # they overlapped: both started before either ended.

    async def both_ended() -> bool:
        return len([e for e in observer.events if is_turn_end(e)]) >= 2

    await wait_until_async(both_ended, 10.0, "the observer to overhear both turns end")
    events = observer.events
    starts = [i for i, e in enumerate(events) if step(request_of(e), "step_start")(e)]
    ends = [i for i, e in enumerate(events) if is_turn_end(e)]
    assert len(starts) == len(ends) == 2, [e["method"] for e in events]
    assert {request_of(events[i]) for i in starts} == {request_of(events[i]) for i in ends}
    assert max(starts) < min(ends), [(e["method"], request_of(e)) for e in events]
    await observer.close()
