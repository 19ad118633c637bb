"""lingma-emulator chat: legacy chat/ask and the ACP flow, scripted replies and fault knobs."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from front.tools import render_tool_call
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
    write_script,
)
from tests.helpers import ChildProcesses, wait_until_async

pytestmark = pytest.mark.component

THINKING_MODEL = "dashscope_qwen_plus_20250428_thinking"


@dataclass
class ChatEmulator:
    emu: Emulator
    script: Path
    record: Path


@pytest.fixture(scope="module")
def chat_emu() -> Iterator[ChatEmulator]:
    root = short_dir()
    registry = ChildProcesses()
    script, record = root / "script.json", root / "record.jsonl"
    write_script(script, [])
    env = {"LINGMA_EMULATOR_SCRIPT": str(script), "LINGMA_EMULATOR_RECORD": str(record)}
    try:
        emu = start_emulator(registry, logged_in_work_dir(root / "wd"), env=env)
        yield ChatEmulator(emu, script, record)
    finally:
        registry.kill_all()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def client(chat_emu: ChatEmulator, http: aiohttp.ClientSession) -> AsyncIterator[RpcClient]:
    write_script(chat_emu.script, [])
    rpc = await connect(http, chat_emu.emu.ws_url)
    yield rpc
    await rpc.close()


async def ask(client: RpcClient, request_id: str, text: str, **kwargs: str) -> dict[str, object]:
    """chat/ask, then wait for its chat/finish; returns the finish params."""
    accepted = await client.call("chat/ask", legacy_ask(request_id, text, **kwargs))
    assert accepted == {
        "requestId": "",
        "success": True,
        "errorCode": "",
        "errorMessage": "",
        "data": None,
    }
    params: dict[str, object] = (await client.wait_for(finished(request_id)))["params"]
    return params


async def test_legacy_ask_event_order(client: RpcClient) -> None:
    text = "[system] be brief\n[user] first question\n[assistant] ok\n[user] second 问题"
    finish = await ask(client, "r-order", text, model="kmodel", session_id="s-order")
    mine = [e for e in client.events if e["params"].get("requestId", "r-order") == "r-order"]
    methods = [e["method"] for e in mine]
    assert methods[:4] == ["chat/process_step_callback"] * 2 + [
        "session/title/update",
        "snapshot/syncAll",  # unrelated to the turn, seen during turns (§5.3)
    ]
    assert [mine[0]["params"]["step"], mine[1]["params"]["step"]] == ["step_start", "step_end"]
    assert mine[2]["params"] == {"sessionId": "s-order", "sessionTitle": "second 问题"}
    assert methods[-2:] == ["context/usage/sync", "chat/finish"]
    assert set(methods[4:-2]) == {"chat/answer"}
    deltas = client.of("chat/answer", "r-order")
    assert any(d["text"] == "" for d in deltas) and len(deltas) <= 8  # instant mode: few frames
    assert {d["overwrite"] for d in deltas} == {False} and deltas[0]["extra"] == {
        "sessionType": "chat"
    }
    ids = [e["id"] for e in mine]
    assert all(isinstance(i, int) for i in ids) and ids == sorted(ids)  # pushes are requests
    full = answer_text(client, "r-order")
    assert full == "[lingma-emulator kmodel] You said: second 问题" == finish["fullAnswer"]
    assert (finish["reason"], finish["statusCode"], finish["sessionId"]) == (
        "success",
        200,
        "s-order",
    )
    usage = finish["extra"]["usage"]  # type: ignore[index]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    sync = client.of("context/usage/sync", "r-order")[0]
    assert sync["limitTokens"] == 128000 and sync["usedTokens"] == usage["total_tokens"]


async def test_models_and_logged_out_refusal(client: RpcClient) -> None:
    await ask(client, "r-auto", "hello")
    assert answer_text(client, "r-auto").startswith("[lingma-emulator auto]")
    await ask(client, "r-think", "why?", model=THINKING_MODEL)
    text = answer_text(client, "r-think")
    assert text.startswith("\n````think::") and "thinking about: why?" in text
    assert text.endswith(f"[lingma-emulator {THINKING_MODEL}] You said: why?")
    unknown = await client.call("chat/ask", legacy_ask("r-unknown", "x", model="gpt-9"))
    assert unknown["success"] is False and unknown["errorCode"] == "MODEL_NOT_FOUND"
    empty = await client.request("chat/ask", legacy_ask("r-empty", ""))
    assert "questionText is empty" in empty["error"]["message"]
    status = await client.call("auth/status")
    await client.call("auth/logout")
    try:
        refused = await client.call("chat/ask", legacy_ask("r-out", "hi"))
        assert refused["success"] is False and refused["errorCode"] and refused["errorMessage"]
        assert client.of("chat/finish", "r-out") == []
    finally:
        await client.call("auth/device_login", {"username": status["name"], "userId": status["id"]})


async def test_script_rules(chat_emu: ChatEmulator, client: RpcClient) -> None:
    tool = {"name": "get_weather", "arguments": {"city": "杭州"}}
    write_script(chat_emu.script, [
        {"match": "weather", "reply": "Checking.", "tool_call": tool},
        {"match": "^think", "reply": "Done.", "thinking": "Let me see."},
        {"match": "once", "reply": "first time", "times": 1},
    ])  # fmt: skip
    await ask(client, "r-tool", "[user] old weather\n[assistant] x\n[user] weather in Hangzhou?")
    assert answer_text(client, "r-tool") == "Checking.\n\n" + render_tool_call(
        "get_weather", {"city": "杭州"}
    )
    await ask(client, "r-notlatest", "[user] weather?\n[assistant] x\n[user] something else")
    assert "You said: something else" in answer_text(client, "r-notlatest")
    await ask(client, "r-fence", "think hard")
    assert answer_text(client, "r-fence") == "\n````think::{THINK_TIME}\nLet me see.\n````\nDone."
    await ask(client, "r-once1", "once")
    await ask(client, "r-once2", "once")
    assert answer_text(client, "r-once1") == "first time"
    assert "You said: once" in answer_text(client, "r-once2")
    write_script(chat_emu.script, [{"match": "weather", "reply": "rewritten"}])
    await ask(client, "r-rewritten", "weather")
    assert answer_text(client, "r-rewritten") == "rewritten"


@pytest.mark.parametrize("status", [429, 500, 408])
async def test_error_rules_set_status(
    chat_emu: ChatEmulator, client: RpcClient, status: int
) -> None:
    write_script(
        chat_emu.script, [{"match": "fail", "error": {"status": status, "message": f"e{status}"}}]
    )
    finish = await ask(client, f"r-{status}", "please fail")
    assert (finish["statusCode"], finish["reason"], finish["fullAnswer"]) == (
        status,
        f"e{status}",
        "",
    )


async def test_delay_hang_and_stop(chat_emu: ChatEmulator, client: RpcClient) -> None:
    write_script(chat_emu.script, [
        {"match": "slow", "reply": "late", "delay_ms": 300},
        {"match": "hang", "reply": "partial", "action": "hang"},
    ])  # fmt: skip
    started = time.monotonic()
    await ask(client, "r-slow", "slow please")
    assert time.monotonic() - started >= 0.3
    await client.call("chat/ask", legacy_ask("r-hang", "hang now", session_id="s-hang"))
    await client.wait_for(lambda _: answer_text(client, "r-hang") == "partial")
    await asyncio.sleep(0.3)  # a hung turn never finishes on its own
    assert client.of("chat/finish", "r-hang") == []
    assert await client.call("session/getCurrent") == {"currentSessionIds": ["s-hang"]}
    assert await client.call("chat/stop", {"requestId": "r-hang"}) == {}
    finish = (await client.wait_for(finished("r-hang")))["params"]
    assert finish["reason"] == "cancelled" and finish["statusCode"] != 200
    assert finish["fullAnswer"] == "partial"
    log = (chat_emu.emu.work_dir / "logs" / "lingma.log").read_text()
    assert "requestId: r-hang status: 499" in log  # failed turns are logged at INFO


async def test_drop_then_reconnect_and_retry(
    chat_emu: ChatEmulator, client: RpcClient, http: aiohttp.ClientSession
) -> None:
    write_script(
        chat_emu.script, [{"match": "drop", "reply": "half an ans", "action": "drop", "times": 1}]
    )
    await client.call("chat/ask", legacy_ask("r-drop", "drop it"))
    with pytest.raises(AssertionError):
        await client.wait_for(finished("r-drop"))
    assert client.closed and answer_text(client, "r-drop") == "half an ans"
    retry = await connect(http, chat_emu.emu.ws_url)
    finish = await ask(retry, "r-drop", "drop it")
    assert finish["statusCode"] == 200 and "You said: drop it" in str(finish["fullAnswer"])
    await retry.close()


async def test_record_file(chat_emu: ChatEmulator, client: RpcClient) -> None:
    await ask(client, "r-rec", "[user] record me", model="mmodel", session_id="s-rec")
    lines = [json.loads(line) for line in chat_emu.record.read_text().splitlines()]
    entry = next(line for line in lines if line["request_id"] == "r-rec")
    assert {k: entry[k] for k in ("flow", "session_id", "mode", "model", "text")} == {
        "flow": "legacy", "session_id": "s-rec", "mode": "normal", "model": "mmodel",
        "text": "[user] record me",
    }  # fmt: skip
    assert isinstance(entry["ts"], float)


async def test_acp_flow(chat_emu: ChatEmulator, client: RpcClient) -> None:
    write_script(chat_emu.script, [{"match": "acp", "reply": "ACP answer here", "thinking": "hmm"}])
    new = await client.call(
        "session/new", {"cwd": "/tmp/p", "mcpServers": [], "_meta": {}, "timestamp": 1}
    )
    sid = new["sessionId"]
    commands = await client.wait_for(lambda e: e["method"] == "session/update")
    assert (
        "id" not in commands
        and commands["params"]["update"]["sessionUpdate"] == "available_commands_update"
    )
    assert (
        await client.call("session/set_model", {"sessionId": sid, "modelId": THINKING_MODEL}) == {}
    )
    bad_model = await client.request("session/set_model", {"sessionId": sid, "modelId": "nope"})
    assert bad_model["error"] is not None
    prompt = {"sessionId": sid, "prompt": [{"type": "text", "text": "[user] acp question"}]}
    missing = await client.request("session/prompt", {**prompt, "_meta": {"requestId": "x"}})
    assert missing["error"]["message"] == "requestId is empty"
    unknown = await client.request(
        "session/prompt", {**prompt, "sessionId": "nope", "_meta": {"ai-coding/request-id": "a0"}}
    )
    assert unknown["error"] is not None
    meta = {"ai-coding/request-id": "a-1", "ai-coding/mode": "agent"}
    accepted = await client.request("session/prompt", {**prompt, "_meta": meta})
    assert "error" not in accepted and accepted["result"] is None
    await client.wait_for(acp_finished("a-1"))
    updates = acp_updates(client, "a-1")
    kinds = [u["sessionUpdate"] for u in updates]
    assert kinds[0] == "agent_thought_chunk" and "agent_message_chunk" in kinds
    assert "ai-coding/thinking-duration-millis" in updates[0]["_meta"]
    thought = "".join(
        u["content"]["text"] for u in updates if u["sessionUpdate"] == "agent_thought_chunk"
    )
    message = "".join(
        u["content"]["text"] for u in updates if u["sessionUpdate"] == "agent_message_chunk"
    )
    assert (thought, message) == ("hmm", "ACP answer here")
    usage, finish = updates[-2], updates[-1]
    assert usage["type"] == "context_usage" and usage["data"]["usedTokens"] > 0
    assert finish["data"]["fullAnswer"] == "" and finish["data"]["reason"] == "success"
    steps = [p["step"] for p in client.of("chat/process_step_callback", "a-1")]
    assert steps == ["step_start", "step_end"]
    assert client.of("session/title/update")[0]["sessionTitle"] == "acp question"
    lines = chat_emu.record.read_text().splitlines()
    record = next(json.loads(x) for x in lines if '"a-1"' in x)
    assert (record["flow"], record["model"], record["mode"]) == ("acp", THINKING_MODEL, "agent")


async def test_acp_cancel_and_session_store(chat_emu: ChatEmulator, client: RpcClient) -> None:
    write_script(chat_emu.script, [{"match": "hang", "action": "hang"}])
    sid = (await client.call("session/new", {"cwd": "/tmp/p", "mcpServers": []}))["sessionId"]
    meta = {"ai-coding/request-id": "a-hang"}
    await client.call(
        "session/prompt",
        {"sessionId": sid, "prompt": [{"type": "text", "text": "hang"}], "_meta": meta},
    )
    await client.wait_for(lambda e: e["params"].get("step") == "step_end")
    await client.send(
        {"jsonrpc": "2.0", "method": "session/cancel", "params": {"sessionId": sid, "_meta": meta}}
    )
    finish = (await client.wait_for(acp_finished("a-hang")))["params"]["update"]["data"]
    # `{reason, fullAnswer}` only, as §5.4 documents the data (ACP_FINISH_STATUS adds a code).
    assert finish == {"reason": "cancelled", "fullAnswer": ""}
    sessions = await client.call("chat/listAllSessions", {})
    assert sid in [s["sessionId"] for s in sessions]
    detail = await client.call("chat/getSessionById", {"sessionId": sid})
    assert detail["session"]["chatRecords"][0]["requestId"] == "a-hang"
    assert await client.call("chat/deleteSessionById", {"id": sid}) == {"success": True}
    gone = await client.request("chat/getSessionById", {"sessionId": sid})
    assert gone["error"] is not None


async def test_many_concurrent_chats(chat_emu: ChatEmulator, http: aiohttp.ClientSession) -> None:
    clients = [await connect(http, chat_emu.emu.ws_url) for _ in range(8)]

    async def one(rpc: RpcClient, index: int) -> None:
        for turn in range(6):
            request_id = f"c{index}-{turn}"
            await ask(rpc, request_id, f"[user] hello {request_id}")
            assert answer_text(rpc, request_id).endswith(f"You said: hello {request_id}")

    started = time.monotonic()
    await asyncio.gather(*(one(rpc, i) for i, rpc in enumerate(clients)))
    assert time.monotonic() - started < 10
    for index, rpc in enumerate(clients):  # events only reach the connection that asked
        assert {p["requestId"][:3] for p in rpc.of("chat/finish")} == {f"c{index}-"}
        await rpc.close()


def _async(predicate: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return predicate()

    return check


async def test_crash_exits_the_process(children: ChildProcesses) -> None:
    root = short_dir()
    try:
        script = root / "script.json"
        write_script(script, [{"match": "crash", "reply": "bye", "action": "crash"}])
        emu = start_emulator(
            children, logged_in_work_dir(root / "wd"), env={"LINGMA_EMULATOR_SCRIPT": str(script)}
        )
        async with aiohttp.ClientSession() as http:
            # No acks: unread acks at exit would turn the FIN into an RST and lose data.
            rpc = await connect(http, emu.ws_url, ack=False)
            await rpc.call("chat/ask", legacy_ask("r-crash", "crash now"))
            proc = children.procs[-1]
            await wait_until_async(_async(lambda: proc.poll() is not None), 10, "crash exit")
            assert proc.returncode == 70
            await rpc.wait_for(lambda _: rpc.closed)
            await rpc.close()
        assert answer_text(rpc, "r-crash") == "bye" and rpc.of("chat/finish") == []
    finally:
        shutil.rmtree(root, ignore_errors=True)
