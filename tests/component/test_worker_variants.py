"""The worker's chat suite against every runtime variant the spec leaves open (issue 14).

A real worker over a real emulator per variant (module-scoped, so each starts once): plain,
streamed with reasoning, tools (agent mode), two concurrent streams whose text must not mix,
a client cancel followed by the next chat, and a second turn. The variants are the emulator's
knobs for what lingma-protocol.md §3.6, §5.3, §5.4, §6.13 and §13 do not settle: pushes
broadcast to every connection and unrelated pushes in between, finishes with or without
`statusCode`, pushes without ids, a cancel nobody answers, a runtime without ACP, one whose
`session/new` hangs or fails, and runtimes that accept one client at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from protocol.channel import MuxClient
from protocol.chat import ChatRequest, Finish, Message, ToolSpec
from protocol.vocabulary import ErrorCode
from tests.component.worker_support import (
    WorkerProcess,
    chat,
    log_in,
    make_spec,
    pong,
    ready_client,
    request_ids_stopped,
    start_worker,
    user,
)
from tests.helpers import ChildProcesses, wait_until_async

pytestmark = pytest.mark.component

THINKING = "dashscope_qwen_plus_20250428_thinking"
PACED = {"LINGMA_EMULATOR_TOKENS_PER_S": "400"}  # streams overlap instead of arriving at once
SILENCE_S = 2.0


@dataclass(frozen=True)
class Variant:
    name: str
    env: dict[str, str]
    flow: str  # the flow the worker must end up using: acp | legacy
    spec: dict[str, Any] = field(default_factory=dict)
    single_client: bool = False  # the worker must notice the eviction and keep one connection


VARIANTS = [
    Variant("acp", {}, "acp"),
    Variant(
        "acp-broadcast-noise",
        {"LINGMA_EMULATOR_BROADCAST": "1", "LINGMA_EMULATOR_NOISE_MS": "30"},
        "acp",
        spec={"acp_connections": 2},  # two shared connections that overhear each other
    ),
    Variant(
        "acp-status-notifications-silent-cancel",
        {
            "LINGMA_EMULATOR_ACP_FINISH_STATUS": "1",
            "LINGMA_EMULATOR_PUSH_AS_NOTIFICATION": "1",
            "LINGMA_EMULATOR_CANCEL_NO_REPLY": "1",
            "LINGMA_EMULATOR_FRAME_MODE": "coalesce",
        },
        "acp",
    ),
    Variant(
        "acp-single-client",
        {"LINGMA_EMULATOR_SINGLE_CLIENT": "1"},
        "acp",
        spec={"acp_connections": 2},  # a second connection evicts the first
        single_client=True,
    ),
    Variant(
        "legacy-broadcast-think-events",
        {
            "LINGMA_EMULATOR_NO_ACP": "1",
            "LINGMA_EMULATOR_BROADCAST": "1",
            "LINGMA_EMULATOR_NOISE_MS": "30",
            "LINGMA_EMULATOR_THINK_STYLE": "event",
        },
        "legacy",
    ),
    Variant(
        "legacy-single-client",
        {"LINGMA_EMULATOR_NO_ACP": "1", "LINGMA_EMULATOR_SINGLE_CLIENT": "1"},
        "legacy",
        single_client=True,
    ),
    Variant(
        "session-new-hangs",
        {"LINGMA_EMULATOR_SESSION_NEW_HANG": "1", "LINGMA_EMULATOR_FRAME_MODE": "split"},
        "legacy",
        spec={"setup_timeout_s": 1.0},
    ),
    Variant("session-new-fails", {"LINGMA_EMULATOR_SESSION_NEW_ERROR": "-32603"}, "legacy"),
]


@pytest.fixture(scope="module", params=VARIANTS, ids=[v.name for v in VARIANTS])
def variant(request: pytest.FixtureRequest) -> Iterator[tuple[Variant, WorkerProcess]]:
    chosen: Variant = request.param
    root = Path(tempfile.mkdtemp(prefix="lgv-", dir="/tmp"))
    children = ChildProcesses()
    try:
        fields = {
            "rpc_timeout_s": 5.0,
            "silence_timeout_s": SILENCE_S,
            "legacy_idle_end_s": 5.0,  # the silence (shorter) bounds it too
            **chosen.spec,
        }
        spec = make_spec(root, env={**PACED, **chosen.env}, **fields)
        process = start_worker(children, spec, root)
        asyncio.run(log_in(process))
        yield chosen, process
    finally:
        children.kill_all()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
async def client(variant: tuple[Variant, WorkerProcess]) -> AsyncIterator[MuxClient]:
    async with ready_client(variant[1]) as mux:
        yield mux


def flows_used(worker: WorkerProcess) -> set[str]:
    return {record["flow"] for record in worker.records() if record.get("accepted")}


async def test_plain_answer(variant: tuple[Variant, WorkerProcess], client: MuxClient) -> None:
    chosen, worker = variant
    result = await chat(client, "hello plain", stream=False)
    assert "You said: hello plain" in result.text
    assert result.finish.first_token_ms is not None and result.finish.usage.prompt_tokens > 0
    assert worker.records()[-1]["flow"] == chosen.flow
    assert "NOISE" not in result.text


async def test_streamed_answer_with_reasoning(
    variant: tuple[Variant, WorkerProcess], client: MuxClient
) -> None:
    result = await chat(client, "think then answer", model=THINKING)
    assert "thinking about: think then answer" in result.reasoning
    assert "You said: think then answer" in result.text
    assert "think::" not in result.text and "````" not in result.text
    assert "thinking about" not in result.text and "NOISE" not in result.reasoning


async def test_tools_ask_in_agent_mode(
    variant: tuple[Variant, WorkerProcess], client: MuxClient
) -> None:
    worker = variant[1]
    worker.set_script([{"match": "weather", "tool_call": {"name": "get_weather"}}])
    tools = [ToolSpec(name="get_weather", parameters_json='{"type": "object"}')]
    result = await chat(client, "weather in Paris?", tools=tools)
    assert "get_weather" in result.text and isinstance(result.end, Finish)
    record = worker.records()[-1]
    assert record["mode"] == "agent" and record["text"] == "weather in Paris?"


async def test_two_concurrent_streams_never_mix(
    variant: tuple[Variant, WorkerProcess], client: MuxClient
) -> None:
    worker = variant[1]
    worker.set_script(
        [
            {"match": "^first stream", "reply": " ".join(f"alpha{n}" for n in range(40))},
            {"match": "^second stream", "reply": " ".join(f"beta{n}" for n in range(40))},
        ]
    )
    first, second = await asyncio.gather(
        chat(client, "first stream"), chat(client, "second stream")
    )
    assert first.text == " ".join(f"alpha{n}" for n in range(40))
    assert second.text == " ".join(f"beta{n}" for n in range(40))
    assert first.finish.upstream_session != second.finish.upstream_session


async def _first_delta_then_leave(client: MuxClient, text: str) -> None:
    request = ChatRequest(
        id=client.next_id(), request_id="variant-cancel", model="auto", messages=[user(text)]
    )
    async with contextlib.aclosing(client.stream(request)) as events:
        async for event in events:
            assert not isinstance(event, Finish), event
            return  # closing the stream early sends Cancel(id)


async def test_cancel_then_the_next_chat(
    variant: tuple[Variant, WorkerProcess], client: MuxClient
) -> None:
    worker = variant[1]
    worker.set_script([{"match": "endless", "reply": "partial answer", "action": "hang"}])
    await _first_delta_then_leave(client, "endless talk")
    upstream_id = worker.records()[-1]["request_id"]

    async def stopped() -> bool:
        return upstream_id in request_ids_stopped(worker.emulator_log())

    async def idle() -> bool:
        return (await pong(client)).stats.in_flight == 0

    await wait_until_async(stopped, 10.0, "the runtime to stop the cancelled turn")
    await wait_until_async(idle, 10.0, "the cancelled chat to be released")
    worker.set_script([])
    assert "You said: and now this" in (await chat(client, "and now this")).text


async def test_a_stalled_answer_is_timed_over_its_own_pushes(
    variant: tuple[Variant, WorkerProcess], client: MuxClient
) -> None:
    """Unrelated pushes (noise, other chats' broadcasts) must not keep a stall alive (§3.6)."""
    chosen, worker = variant
    worker.set_script([{"match": "stall", "reply": "some words", "action": "hang"}])
    started = asyncio.get_running_loop().time()
    result = await chat(client, "stall here", timeout=SILENCE_S + 8.0)
    assert asyncio.get_running_loop().time() - started < SILENCE_S + 6.0
    if chosen.flow == "acp":
        assert result.failure.code is ErrorCode.UPSTREAM_TIMEOUT
        assert f"nothing for {SILENCE_S:.0f}s" in result.failure.message
    else:  # legacy: a silence after text ends the answer (§5.3 fallback), and stops the turn
        assert result.finish.usage.completion_tokens > 0 and result.text == "some words"
    upstream_id = worker.records()[-1]["request_id"]

    async def stopped() -> bool:
        return upstream_id in request_ids_stopped(worker.emulator_log())

    await wait_until_async(stopped, 10.0, "the runtime to stop the stalled turn")


async def test_a_second_turn(variant: tuple[Variant, WorkerProcess], client: MuxClient) -> None:
    chosen, worker = variant
    first = await chat(client, "turn one")
    history = [user("turn one"), Message(role="assistant", text=first.text)]
    second = await chat(client, [*history, user("turn two")])
    assert "You said: turn two" in second.text
    sent = worker.records()[-1]["text"]
    if chosen.flow == "acp":  # the session keeps the history: only the new turn goes up
        assert second.finish.session_reused and sent == "turn two"
        assert second.finish.upstream_session == first.finish.upstream_session
    else:  # legacy reuse is opt-in: the whole conversation goes up again
        assert not second.finish.session_reused and sent.startswith("[user] turn one")


async def test_the_variant_was_handled_as_such(
    variant: tuple[Variant, WorkerProcess], client: MuxClient
) -> None:
    chosen, worker = variant
    await chat(client, "one more")
    assert flows_used(worker) == {chosen.flow}
    log = worker.log_path.read_text()
    assert ("serves one client at a time" in log) is chosen.single_client
    if chosen.single_client:  # after the switch, no connection was evicted any more
        evictions = worker.emulator_log().count("single client: closing connection")
        await chat(client, "and again")
        assert worker.emulator_log().count("single client: closing connection") == evictions
