"""lingma-emulator tools module (LINGMA_EMULATOR_TOOLS=1, §12.8): tool/invoke round trips.

First with a plain JSON-RPC client that answers (or ignores) tool/invoke by hand, then with a
real worker, whose rpc layer declines every tool/invoke, over both chat flows.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from protocol.chat import ToolSpec
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
from tests.component.worker_support import (
    WorkerProcess,
    chat,
    log_in,
    make_spec,
    ready_client,
    start_worker,
)
from tests.helpers import ChildProcesses

pytestmark = pytest.mark.component

TIMEOUT_MS = 1500
READ_FILE = {"name": "read_file", "parameters": {"filePath": "/w/a.py"}}
RULES: list[dict[str, Any]] = [
    {"match": "read it", "reply": "Done reading.", "ide_tool": READ_FILE},
    {
        "match": "run later",
        "reply": "Ran it.",
        "ide_tool": {"name": "run_in_terminal", "parameters": {"command": "ls"}, "async": True},
    },
]
CARD = re.compile(r"```toolCall::read_file::(toolu_[0-9a-f]{16})::INIT\n```")


@dataclass
class ToolsEmulator:
    emu: Emulator
    record: Path

    def tool_records(self, request_id: str) -> list[dict[str, Any]]:
        lines = self.record.read_text().splitlines() if self.record.exists() else []
        records = [json.loads(line) for line in lines if line]
        return [r for r in records if r.get("event") == "tool" and r["request_id"] == request_id]


def start_tools_emulator(registry: ChildProcesses, root: Path, knob: str) -> ToolsEmulator:
    workdir = logged_in_work_dir(root / "wd", "tools")
    script, record = root / "script.json", root / "record.jsonl"
    write_script(script, RULES)
    env = {
        "LINGMA_EMULATOR_SCRIPT": str(script),
        "LINGMA_EMULATOR_RECORD": str(record),
        "LINGMA_EMULATOR_TOOLS": knob,
        "LINGMA_EMULATOR_TOOL_TIMEOUT_MS": str(TIMEOUT_MS),
    }
    return ToolsEmulator(start_emulator(registry, workdir, env=env), record)


@pytest.fixture(scope="module")
def emulators() -> Iterator[dict[str, ToolsEmulator]]:
    """The same script against an emulator with the tools module on and one with it off."""
    root = short_dir()
    registry = ChildProcesses()
    try:
        (root / "on").mkdir()
        (root / "off").mkdir()
        yield {
            "on": start_tools_emulator(registry, root / "on", "1"),
            "off": start_tools_emulator(registry, root / "off", "0"),
        }
    finally:
        registry.kill_all()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def agent_ask(request_id: str, text: str) -> dict[str, Any]:
    return {**legacy_ask(request_id, text, session_id=f"s-{request_id}"), "mode": "agent"}


async def acp_prompt(client: RpcClient, request_id: str, text: str, mode: str = "agent") -> None:
    """`mode` "" leaves `ai-coding/mode` out: public clients send "agent" or nothing (§5.4)."""
    session = await client.call("session/new", {"cwd": "/w", "mcpServers": []})
    meta = {"ai-coding/request-id": request_id}
    if mode:
        meta["ai-coding/mode"] = mode
    prompt = [{"type": "text", "text": text}]
    await client.call(
        "session/prompt", {"sessionId": session["sessionId"], "prompt": prompt, "_meta": meta}
    )


def is_invoke(event: dict[str, Any]) -> bool:
    return bool(event["method"] == "tool/invoke")


def sync_statuses(client: RpcClient, request_id: str) -> list[str]:
    return [p["toolCallStatus"] for p in client.of("tool/call/sync", request_id)]


def legacy_trace(client: RpcClient, request_id: str) -> list[str]:
    """One ask's tool pushes, answer text and finish as labels, repeats collapsed, in order."""
    trace: list[str] = []
    for event in client.events:
        method, params = event["method"], event["params"]
        if params.get("requestId") != request_id:
            continue
        label = {"tool/invoke": "invoke", "chat/finish": "finish"}.get(method, "")
        if method == "tool/call/sync":
            label = f"sync {params['toolCallStatus']}"
        elif method == "chat/answer" and params["text"]:
            label = "card" if "toolCall::" in params["text"] else "text"
        if label and (not trace or trace[-1] != label):
            trace.append(label)
    return trace


def tool_updates(client: RpcClient, request_id: str) -> list[dict[str, Any]]:
    kinds = {"tool_call", "tool_call_update"}
    return [u for u in acp_updates(client, request_id) if u["sessionUpdate"] in kinds]


def acp_text(client: RpcClient, request_id: str) -> str:
    updates = acp_updates(client, request_id)
    return "".join(
        u["content"]["text"] for u in updates if u["sessionUpdate"] == "agent_message_chunk"
    )


async def test_legacy_turn_waits_for_the_client_verdict(
    emulators: dict[str, ToolsEmulator], http: aiohttp.ClientSession
) -> None:
    tools_emu = emulators["on"]
    client = await connect(http, tools_emu.emu.ws_url, ack=False)
    await client.call("chat/ask", agent_ask("t-1", "please read it"))
    invoke = await client.wait_for(is_invoke)
    call_id = invoke["params"]["toolCallId"]
    assert isinstance(invoke["id"], int)  # a request: the runtime waits for its reply
    assert invoke["params"] == {
        "requestId": "t-1",
        "toolCallId": call_id,
        "name": "read_file",
        "parameters": {"filePath": "/w/a.py"},
        "async": False,
    }
    card = CARD.search(answer_text(client, "t-1"))
    assert card is not None and card.group(1) == call_id
    assert sync_statuses(client, "t-1") == ["PENDING", "RUNNING"]
    await client.call("ping")  # a round trip later the turn is still waiting for our verdict
    assert sync_statuses(client, "t-1") == ["PENDING", "RUNNING"]
    assert not client.of("chat/finish", "t-1") and "Done reading." not in answer_text(client, "t-1")
    result = {"content": "print('from the client')"}
    verdict = {"toolCallId": call_id, "name": "read_file", "success": True, "result": result}
    await client.send({"jsonrpc": "2.0", "id": invoke["id"], "result": verdict})
    finish = (await client.wait_for(finished("t-1")))["params"]
    assert finish["statusCode"] == 200
    syncs = client.of("tool/call/sync", "t-1")
    assert [s["toolCallStatus"] for s in syncs] == ["PENDING", "RUNNING", "FINISHED"]
    assert syncs[-1]["results"] == [result] and syncs[-1]["toolCallId"] == call_id
    assert legacy_trace(client, "t-1") == [
        "card",
        "sync PENDING",
        "sync RUNNING",
        "invoke",
        "sync FINISHED",
        "text",
        "finish",
    ]
    text = answer_text(client, "t-1")
    assert "read_file" in text and "from the client" in text and text.endswith("Done reading.")
    [record] = tools_emu.tool_records("t-1")
    assert (record["flow"], record["tool_call_id"], record["outcome"]) == (
        "legacy",
        call_id,
        "succeeded",
    )
    assert (record["via"], record["reply"]) == ("reply", verdict)
    await client.close()


async def test_acp_async_tool_waits_for_invoke_result(
    emulators: dict[str, ToolsEmulator], http: aiohttp.ClientSession
) -> None:
    tools_emu = emulators["on"]
    client = await connect(http, tools_emu.emu.ws_url, ack=False)
    await acp_prompt(client, "t-2", "run later please")
    invoke = await client.wait_for(is_invoke)
    call_id = invoke["params"]["toolCallId"]
    assert invoke["params"]["async"] is True and invoke["params"]["requestId"] == "t-2"
    assert invoke["params"]["name"] == "run_in_terminal"
    await client.send({"jsonrpc": "2.0", "id": invoke["id"], "result": None})  # accepted, later
    await client.call("ping")
    assert [u.get("status") for u in tool_updates(client, "t-2")] == ["pending", "in_progress"]
    late = {"toolCallId": call_id, "name": "run_in_terminal", "success": True, "result": "a.py"}
    assert await client.call("tool/invokeResult", late) == {}
    await client.wait_for(acp_finished("t-2"))
    updates = tool_updates(client, "t-2")
    kinds = [u["sessionUpdate"] for u in updates]
    assert kinds == ["tool_call", "tool_call_update", "tool_call_update"]
    assert {u["toolCallId"] for u in updates} == {call_id}
    assert updates[0]["rawInput"] == {"command": "ls"} and updates[0]["status"] == "pending"
    assert updates[-1]["status"] == "completed" and updates[-1]["rawOutput"] == ["a.py"]
    text = acp_text(client, "t-2")
    assert "run_in_terminal" in text and "a.py" in text and text.endswith("Ran it.")
    [record] = tools_emu.tool_records("t-2")
    assert (record["flow"], record["outcome"], record["via"]) == (
        "acp",
        "succeeded",
        "invokeResult",
    )
    assert record["reply"] == late
    gone = await client.request("tool/invokeResult", late)  # nobody waits for it any more
    assert gone["error"]["code"] == -32602
    await client.close()


@pytest.mark.parametrize("flow", ["legacy", "acp"])
async def test_a_client_that_never_replies_gets_the_turn_finished_after_the_timeout(
    flow: str, emulators: dict[str, ToolsEmulator], http: aiohttp.ClientSession
) -> None:
    tools_emu = emulators["on"]
    client = await connect(http, tools_emu.emu.ws_url, ack=False)
    request_id = f"t-silent-{flow}"
    started = time.monotonic()
    if flow == "legacy":
        await client.call("chat/ask", agent_ask(request_id, "read it, nobody answers"))
        await client.wait_for(finished(request_id), timeout=TIMEOUT_MS / 1000 + 5)
        assert sync_statuses(client, request_id) == ["PENDING", "RUNNING", "ERROR"]
        assert client.of("tool/call/sync", request_id)[-1]["errorCode"] == "TIMED_OUT"
        text = answer_text(client, request_id)
    else:
        await acp_prompt(client, request_id, "read it, nobody answers")
        await client.wait_for(acp_finished(request_id), timeout=TIMEOUT_MS / 1000 + 5)
        last = tool_updates(client, request_id)[-1]
        assert last["status"] == "failed"
        assert last["_meta"]["ai-coding/tool-call-error-code"] == "timed_out"
        text = acp_text(client, request_id)
    assert time.monotonic() - started >= TIMEOUT_MS / 1000  # it did wait for a verdict
    assert len([e for e in client.events if is_invoke(e)]) == 1
    assert "timed_out" in text and text.endswith("Done reading.")
    [record] = tools_emu.tool_records(request_id)
    assert (record["outcome"], record["via"], record["reply"]) == ("timed_out", "nothing", None)
    await client.close()


async def test_no_tool_traffic_without_the_knob_or_outside_agent_mode(
    emulators: dict[str, ToolsEmulator], http: aiohttp.ClientSession
) -> None:
    off = await connect(http, emulators["off"].emu.ws_url)
    await off.call("chat/ask", agent_ask("n-1", "read it"))
    await off.wait_for(finished("n-1"))
    await acp_prompt(off, "n-2", "read it")
    await off.wait_for(acp_finished("n-2"))
    assert answer_text(off, "n-1") == "Done reading." == acp_text(off, "n-2")
    unknown = await off.request("tool/invokeResult", {"toolCallId": "x"})
    assert unknown["error"]["code"] == -32601
    on = await connect(http, emulators["on"].emu.ws_url)
    await on.call("chat/ask", {**agent_ask("n-3", "read it"), "mode": "normal"})
    await on.wait_for(finished("n-3"))
    await acp_prompt(on, "n-4", "read it", mode="")
    await on.wait_for(acp_finished("n-4"))
    assert answer_text(on, "n-3") == "Done reading." == acp_text(on, "n-4")
    for client in (off, on):
        assert not [e for e in client.events if e["method"].startswith("tool/")]
        assert not [u for r in ("n-2", "n-4") for u in tool_updates(client, r)]
        await client.close()
    assert not any(tools.tool_records(r) for tools in emulators.values() for r in ("n-1", "n-2"))


# --------------------------------------------------------------------------- real worker


@pytest.fixture(scope="module", params=["acp", "legacy"])
def worker(request: pytest.FixtureRequest) -> Iterator[WorkerProcess]:
    root = short_dir("lgw-tools-")
    children = ChildProcesses()
    env = {"LINGMA_EMULATOR_TOOLS": "1", "LINGMA_EMULATOR_TOOL_TIMEOUT_MS": "4000"}
    if request.param == "legacy":
        env["LINGMA_EMULATOR_NO_ACP"] = "1"
    try:
        process = start_worker(children, make_spec(root, env=env), root)
        asyncio.run(log_in(process))
        yield process
    finally:
        children.kill_all()
        shutil.rmtree(root, ignore_errors=True)


async def test_a_real_worker_declines_the_tool_and_the_turn_completes(
    worker: WorkerProcess,
) -> None:
    flow = "legacy" if worker.spec.binary_env.get("LINGMA_EMULATOR_NO_ACP") else "acp"
    async with ready_client(worker) as client:
        worker.set_script([{"match": "read it", "reply": "Done reading.", "ide_tool": READ_FILE}])
        tools = [ToolSpec(name="get_weather", parameters_json='{"type": "object"}')]
        result = await chat(client, "please read it", tools=tools, timeout=15)
    assert result.finish.served_by == "acct-a"
    assert "Done reading." in result.text and "declined" in result.text
    assert "toolCall::" not in result.text  # the legacy card is plugin UI, never answer text
    asked = [r for r in worker.records() if r.get("event") is None][-1]
    assert (asked["flow"], asked["mode"]) == (flow, "agent")
    [record] = [r for r in worker.records() if r.get("event") == "tool"]
    assert (record["flow"], record["request_id"]) == (flow, asked["request_id"])
    # "reply", not a timeout: the worker's answer to tool/invoke ended the wait.
    assert (record["name"], record["outcome"], record["via"]) == ("read_file", "declined", "reply")
    assert record["reply"]["success"] is False
    assert record["reply"]["toolCallId"] == record["tool_call_id"]
    assert record["error_message"] == "tools are not executed by lingma-gw"
