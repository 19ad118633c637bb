"""lingma-emulator knobs: push shapes, frame modes, strict acks, pacing, startup delay, no ACP."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.component.emulator_support import (
    Emulator,
    acp_finished,
    acp_updates,
    answer_text,
    connect,
    finished,
    frame,
    legacy_ask,
    logged_in_work_dir,
    short_dir,
    start_emulator,
)
from tests.helpers import ChildProcesses

pytestmark = pytest.mark.component

VSCODE_LIKE = {
    "LINGMA_EMULATOR_PUSH_AS_NOTIFICATION": "1",
    "LINGMA_EMULATOR_NO_ACP": "1",
    "LINGMA_EMULATOR_FRAME_MODE": "split",
    "LINGMA_EMULATOR_EXTENSION_REGISTER": "1",
    "LINGMA_EMULATOR_THINK_STYLE": "event",
    "LINGMA_EMULATOR_TITLE_BEFORE_STEP_END": "1",
    "LINGMA_EMULATOR_LOGIN_BASE": "https://devops.example.test",
}
STRICT = {
    "LINGMA_EMULATOR_STRICT_ACK": "1",
    "LINGMA_EMULATOR_FRAME_MODE": "coalesce",
    "LINGMA_EMULATOR_UNFRAMED": "close",
    "LINGMA_EMULATOR_STARTUP_DELAY_MS": "400",
    "LINGMA_EMULATOR_TOKENS_PER_S": "100",
    "LINGMA_EMULATOR_FIRST_TOKEN_MS": "200",
    "LINGMA_EMULATOR_REPLY_TOKENS": "30",
    "LINGMA_EMULATOR_ACP_FULL_ANSWER": "1",
}


@pytest.fixture(scope="module")
def root() -> Iterator[Path]:
    path = short_dir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def vscode_emu(root: Path) -> Iterator[Emulator]:
    registry = ChildProcesses()
    try:
        yield start_emulator(
            registry, logged_in_work_dir(root / "vscode", "knobs"), env=VSCODE_LIKE
        )
    finally:
        registry.kill_all()


@pytest.fixture(scope="module")
def strict_emu(root: Path) -> Iterator[tuple[Emulator, float]]:
    registry = ChildProcesses()
    started = time.monotonic()
    try:
        emu = start_emulator(registry, logged_in_work_dir(root / "strict", "knobs"), env=STRICT)
        yield emu, time.monotonic() - started
    finally:
        registry.kill_all()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_vscode_like_runtime(vscode_emu: Emulator, http: aiohttp.ClientSession) -> None:
    client = await connect(http, vscode_emu.ws_url)
    register = await client.wait_for(lambda e: e["method"] == "extension/register")
    assert isinstance(register["id"], int)  # a request before any reply of ours
    missing = await client.request("session/new", {"cwd": "/tmp", "mcpServers": []})
    assert missing["error"] == {"code": -32601, "message": "method not found: session/new"}
    await client.call("chat/ask", legacy_ask("v-1", "why?", session_id="s-v"))
    finish = (await client.wait_for(finished("v-1")))["params"]
    pushes = [e for e in client.events if e["method"] != "extension/register"]
    assert all("id" not in e for e in pushes)  # knob: pushes as notifications
    methods = [e["method"] for e in pushes]
    assert methods.index("session/title/update") < [e["params"].get("step") for e in pushes].index(
        "step_end"
    )  # knob: title before step_end
    assert client.frames >= 2 * (len(client.events) + 2)  # knob: every message in two frames
    assert finish["statusCode"] == 200 and "You said: why?" in answer_text(client, "v-1")
    thinking_reply = await client.call("chat/ask", legacy_ask(
        "v-2", "deep", model="dashscope_qwen_plus_20250428_thinking"))  # fmt: skip
    assert thinking_reply["success"] is True
    await client.wait_for(finished("v-2"))
    thinks = client.of("chat/think", "v-2")
    assert thinks[-1]["step"] == "done" and "thinking about: deep" in "".join(
        t["text"] for t in thinks
    )
    assert "````think" not in answer_text(client, "v-2")
    login = await client.call("auth/login")
    assert login["url"].startswith("https://devops.example.test/lingma/login?nonce=")
    assert f"port={vscode_emu.http_port}&" in login["url"]
    await client.close()


async def test_startup_delay_and_strict_ack(
    strict_emu: tuple[Emulator, float], http: aiohttp.ClientSession
) -> None:
    emu, startup = strict_emu
    assert startup >= 0.4
    client = await connect(http, emu.ws_url, ack=False)
    await client.call("chat/ask", legacy_ask("s-1", "strict"))
    first = await client.wait_for(lambda e: e["method"] == "chat/process_step_callback")
    assert client.of("chat/process_step_callback") == [first["params"]]
    started = time.monotonic()
    pushes = 1
    while not client.of("chat/finish", "s-1"):  # ack each push by hand; the next one follows
        assert time.monotonic() - started < 10
        await client.send({"jsonrpc": "2.0", "id": client.events[-1]["id"], "result": None})
        await client.wait_for(lambda _, n=pushes: len(client.events) > n)  # type: ignore[misc]
        pushes += 1
    assert len(client.events) == pushes
    deltas = client.of("chat/answer", "s-1")
    assert len([d for d in deltas if d["text"]]) >= 10  # paced: several tokens per tick
    assert time.monotonic() - started >= 0.2  # FIRST_TOKEN_MS
    assert len(answer_text(client, "s-1").split()) >= 30  # REPLY_TOKENS
    await client.close()


async def test_coalesced_frames_full_answer_and_unframed_close(
    strict_emu: tuple[Emulator, float], http: aiohttp.ClientSession
) -> None:
    emu, _ = strict_emu
    client = await connect(http, emu.ws_url)
    sid = (await client.call("session/new", {"cwd": "/tmp", "mcpServers": []}))["sessionId"]
    prompt = [{"type": "text", "text": "hi"}]
    meta = {"ai-coding/request-id": "k-1"}
    await client.call("session/prompt", {"sessionId": sid, "prompt": prompt, "_meta": meta})
    await client.wait_for(acp_finished("k-1"), timeout=10)
    updates = acp_updates(client, "k-1")
    message = "".join(
        u["content"]["text"] for u in updates if u["sessionUpdate"] == "agent_message_chunk"
    )
    assert updates[-1]["data"]["fullAnswer"] == message != ""  # knob: fullAnswer filled
    burst = frame({"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {}}) * 5
    raw = await http.ws_connect(emu.ws_url)
    await raw.send_str(burst)
    reply = await raw.receive_str(timeout=5)
    assert reply.count("Content-Length:") == 5  # knob: coalesced into one frame
    await raw.send_str(json.dumps({"jsonrpc": "2.0", "id": 2, "method": "ping", "params": {}}))
    closing = await raw.receive(timeout=5)
    assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)  # knob: close
    await raw.close()
    await client.close()
