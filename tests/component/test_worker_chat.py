"""A real worker over the emulator (ACP flow): chats, sessions, errors, cancel, limits, IPC."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import struct
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from emulator.turns import usage_for
from protocol.channel import MuxClient
from protocol.chat import (
    ChatRequest,
    Failure,
    Finish,
    FinishReason,
    Message,
    Reasoning,
    ToolCall,
    ToolSpec,
)
from protocol.child_socket import Ok, Ping, Pong, Stats, StatsQuery
from protocol.framing import MAX_FRAME, ConnectionClosed, open_framed
from protocol.tokens import estimate_tokens
from protocol.vocabulary import ChildState, ErrorCode
from protocol.worker_socket import (
    ClearCooldown,
    Models,
    ModelsQuery,
    ModelsRaw,
    ModelsRawQuery,
    WorkerReply,
)
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
    wait_state,
)
from tests.helpers import ChildProcesses, wait_until_async

pytestmark = pytest.mark.component

ALIASES = {"claude-*": "kmodel", "coder": "dashscope_qwen3_coder"}
# Coalesced frames (several messages per WebSocket frame) and a stray server request on connect.
EMULATOR = {"LINGMA_EMULATOR_FRAME_MODE": "coalesce", "LINGMA_EMULATOR_EXTENSION_REGISTER": "1"}
THINKING = "dashscope_qwen_plus_20250428_thinking"


@pytest.fixture(scope="module")
def worker() -> Iterator[WorkerProcess]:
    root = Path(tempfile.mkdtemp(prefix="lgw-", dir="/tmp"))
    children = ChildProcesses()
    try:
        spec = make_spec(
            root,
            env=EMULATOR,
            model_aliases=ALIASES,
            cooldown_s=1.0,
            max_concurrency=2,
            queue_timeout_s=0.5,
        )
        process = start_worker(children, spec, root)
        asyncio.run(log_in(process))
        yield process
    finally:
        children.kill_all()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
async def client(worker: WorkerProcess) -> AsyncIterator[MuxClient]:
    async with ready_client(worker) as mux:
        yield mux


async def test_streaming_chat_over_acp(worker: WorkerProcess, client: MuxClient) -> None:
    before = await client.call(lambda i: StatsQuery(id=i), 5.0)
    assert isinstance(before, Stats)
    result = await chat(client, "hello there")
    assert "You said: hello there" in result.text
    finish = result.finish
    assert (finish.served_by, finish.model, finish.session_reused) == ("acct-a", "auto", False)
    assert finish.upstream_session and finish.first_token_ms is not None
    assert finish.total_ms >= finish.first_token_ms and finish.usage.completion_tokens > 0
    record = worker.records()[-1]
    # `ai-coding/mode` is "agent" or absent, as public clients send it (§5.4), never "chat".
    assert (record["flow"], record["model"], record["mode"]) == ("acp", "auto", "")
    # The client is told the shared estimate (count_tokens agrees with it); the account's own
    # figures take the runtime's context_usage.usedTokens when it sends them.
    assert finish.usage.prompt_tokens == estimate_tokens("hello there")
    after = await client.call(lambda i: StatsQuery(id=i), 5.0)
    assert isinstance(after, Stats)
    used = usage_for("hello there", result.text).total_tokens
    assert after.stats.prompt_tokens_total - before.stats.prompt_tokens_total == used
    assert (record["text"], record["session_id"]) == ("hello there", finish.upstream_session)


async def test_non_streaming_request_gets_the_same_answer(client: MuxClient) -> None:
    result = await chat(client, "quiet please", stream=False)
    assert "You said: quiet please" in result.text and isinstance(result.end, Finish)


async def test_a_follow_up_reuses_the_session_and_sends_only_the_new_turn(
    worker: WorkerProcess, client: MuxClient
) -> None:
    system = Message(role="system", text="You are terse.")
    first = await chat(client, [system, user("first question")])
    history = [system, user("first question"), Message(role="assistant", text=first.text)]
    second = await chat(client, [*history, user("second question")])
    assert second.finish.session_reused
    assert second.finish.upstream_session == first.finish.upstream_session
    sent = worker.records()[-2:]
    assert sent[0]["text"] == "[system] You are terse.\n[user] first question"
    assert sent[1]["text"] == "second question"
    assert sent[1]["session_id"] == sent[0]["session_id"]
    # A branch from the same point must not land in the session that now holds turn two.
    branch = await chat(client, [*history, user("another branch")])
    assert not branch.finish.session_reused
    assert branch.finish.upstream_session != first.finish.upstream_session
    assert worker.records()[-1]["text"].startswith("[system] You are terse.")


async def test_reasoning_models_stream_reasoning_apart_from_text(client: MuxClient) -> None:
    result = await chat(client, "think first", model=THINKING)
    assert any(isinstance(e, Reasoning) for e in result.events)
    assert "thinking about" in result.reasoning and "thinking about" not in result.text
    assert result.finish.model == THINKING


async def test_tools_select_agent_mode_and_aliases_pick_the_model(
    worker: WorkerProcess, client: MuxClient
) -> None:
    tools = [ToolSpec(name="get_weather", parameters_json='{"type": "object"}')]
    result = await chat(client, "weather?", model="claude-sonnet-4-5", tools=tools)
    assert result.finish.model == "kmodel"
    record = worker.records()[-1]
    assert (record["mode"], record["model"]) == ("agent", "kmodel")
    assert (await chat(client, "x", model="Qwen3-Coder")).finish.model == "dashscope_qwen3_coder"
    assert (await chat(client, "x", model="gpt-4o")).finish.model == "auto"


async def test_native_runtime_tool_events_become_tool_calls(
    worker: WorkerProcess, client: MuxClient
) -> None:
    worker.set_script(
        [
            {
                "match": "list the files",
                "reply": "Looking.",
                "native_tool_call": {"name": "list_dir", "arguments": {"path": "src"}},
            }
        ]
    )
    tools = [ToolSpec(name="get_weather", parameters_json='{"type": "object"}')]
    result = await chat(client, "please list the files", tools=tools)
    calls = [e for e in result.events if isinstance(e, ToolCall)]
    assert len(calls) == 1, result.events
    assert calls[0].name == "list_dir" and calls[0].call_id.startswith("call_")
    assert json.loads(calls[0].arguments_json) == {"path": "src"}
    assert result.text == "Looking."
    assert result.finish.reason is FinishReason.TOOL_CALLS


async def test_unknown_model_fails_listing_the_models(client: MuxClient) -> None:
    failure = (await chat(client, "hi", model="llama-70b")).failure
    assert failure.code is ErrorCode.UNKNOWN_MODEL
    assert "dashscope_qwen3_coder" in failure.message and "claude-*" in failure.message


async def test_upstream_errors_map_to_error_codes(worker: WorkerProcess, client: MuxClient) -> None:
    worker.set_script(
        [
            {"match": "boom", "error": {"status": 500, "message": "server exploded"}},
            {"match": "slow", "error": {"status": 408, "message": "too slow"}},
            {"match": "drop", "reply": "half", "action": "drop"},
            {"match": "empty", "reply": ""},
            {"match": "expired", "error": {"kind": "login"}},
        ]
    )
    boom = (await chat(client, "boom")).failure
    assert boom.code is ErrorCode.UPSTREAM_ERROR and "server exploded" in boom.message
    assert (await chat(client, "slow")).failure.code is ErrorCode.UPSTREAM_TIMEOUT
    dropped = await chat(client, "drop")
    assert dropped.failure.code is ErrorCode.UPSTREAM_ERROR and dropped.text == "half"
    # A success finish with nothing in it is an upstream error, never an empty 200.
    empty = (await chat(client, "empty")).failure
    assert empty.code is ErrorCode.UPSTREAM_ERROR and "without an answer" in empty.message
    # No statusCode in the ACP finish (§5.4): the wording says the login is gone.
    assert (await chat(client, "expired")).failure.code is ErrorCode.NOT_LOGGED_IN
    assert (await chat(client, "fine again")).finish.served_by == "acct-a"


async def test_rate_limit_cools_the_account_down_then_recovers(
    worker: WorkerProcess, client: MuxClient
) -> None:
    worker.set_script([{"match": "busy", "error": {"status": 429, "message": "slow down"}}])
    failure = (await chat(client, "busy")).failure
    assert failure.code is ErrorCode.UPSTREAM_RATE_LIMITED and failure.retry_after == 1.0
    cooling = await pong(client)
    assert cooling.state is ChildState.DEGRADED and cooling.cooldown_until > time.time()
    refused = (await chat(client, "anything")).failure
    assert refused.code is ErrorCode.UPSTREAM_RATE_LIMITED and refused.retry_after
    recovered = await wait_state(client, ChildState.READY, timeout=5.0)
    assert recovered.cooldown_until == 0.0 and recovered.stats.upstream_429_total >= 1
    assert "You said" in (await chat(client, "after the pause")).text
    # An operator can end a cooldown at once; quota wording takes the same 429 path (§14.10).
    worker.set_script([{"match": "busy", "error": {"kind": "quota"}}])
    assert (await chat(client, "busy again")).failure.code is ErrorCode.UPSTREAM_RATE_LIMITED
    assert (await pong(client)).state is ChildState.DEGRADED
    assert isinstance(await client.call(lambda i: ClearCooldown(id=i), 5.0), Ok)
    assert (await pong(client)).state is ChildState.READY


async def _first_delta_then_leave(client: MuxClient, text: str) -> str:
    request = ChatRequest(
        id=client.next_id(), request_id="cancel-me", model="auto", messages=[user(text)]
    )
    async with contextlib.aclosing(client.stream(request)) as events:
        async for event in events:
            assert not isinstance(event, Finish | Failure), event
            return str(event.text)  # closing the stream early sends Cancel(id)
    raise AssertionError("no event")


async def test_cancel_stops_the_upstream_answer(worker: WorkerProcess, client: MuxClient) -> None:
    worker.set_script([{"match": "endless", "reply": "partial answer", "action": "hang"}])
    assert await _first_delta_then_leave(client, "endless story")
    upstream_id = worker.records()[-1]["request_id"]

    async def stopped() -> bool:
        return upstream_id in request_ids_stopped(worker.emulator_log())

    await wait_until_async(stopped, 5.0, "the emulator to stop the cancelled turn")
    await wait_until_async(lambda: _idle(client), 5.0, "the worker to release the cancelled chat")


async def test_the_request_deadline_ends_a_stalled_answer(
    worker: WorkerProcess, client: MuxClient
) -> None:
    worker.set_script([{"match": "stall", "reply": "so far", "action": "hang"}])
    request = ChatRequest(
        id=client.next_id(),
        request_id="late",
        model="auto",
        messages=[user("stall please")],
        deadline=time.time() + 0.5,
    )
    events = [event async for event in client.stream(request)]
    failure = events[-1]
    assert isinstance(failure, Failure) and failure.code is ErrorCode.DEADLINE_EXCEEDED
    upstream_id = worker.records()[-1]["request_id"]

    async def stopped() -> bool:
        return upstream_id in request_ids_stopped(worker.emulator_log())

    await wait_until_async(stopped, 5.0, "the emulator to stop the expired turn")


async def _idle(client: MuxClient) -> bool:
    return (await pong(client)).stats.in_flight == 0


async def test_concurrency_limit_queues_then_overloads(
    worker: WorkerProcess, client: MuxClient
) -> None:
    worker.set_script([{"match": "hold", "reply": "holding", "action": "hang"}])
    holders = [asyncio.create_task(_first_delta_then_wait(client)) for _ in range(2)]
    await wait_until_async(lambda: _in_flight(client, 2), 5.0, "two chats upstream")
    failure = (await chat(client, "hold too")).failure
    assert failure.code is ErrorCode.OVERLOADED and failure.retry_after
    for task in holders:
        task.cancel()
    await asyncio.gather(*holders, return_exceptions=True)
    await wait_until_async(lambda: _idle(client), 5.0, "the held chats to be cancelled")


async def _first_delta_then_wait(client: MuxClient) -> None:
    request = ChatRequest(
        id=client.next_id(), request_id="hold", model="auto", messages=[user("hold on")]
    )
    async with contextlib.aclosing(client.stream(request)) as events:
        async for _event in events:
            await asyncio.sleep(60)  # cancelled by the test; closing the stream sends Cancel


async def _in_flight(client: MuxClient, count: int) -> bool:
    return (await pong(client)).stats.in_flight == count


async def test_models_stats_and_ping(client: MuxClient) -> None:
    models = await client.call(lambda i: ModelsQuery(id=i), 5.0)
    assert isinstance(models, Models) and models.aliases == ALIASES
    assert {"auto", THINKING, "kmodel"} <= {m.key for m in models.models}
    raw = await client.call(lambda i: ModelsRawQuery(id=i), 5.0)
    assert isinstance(raw, ModelsRaw) and "chat" in raw.raw
    await chat(client, "count me")
    stats = await client.call(lambda i: StatsQuery(id=i), 5.0)
    assert isinstance(stats, Stats) and stats.stats.requests_total >= 1
    families = {f.name: f for f in stats.metrics}
    assert {
        "lingma_gw_worker_requests",
        "lingma_gw_worker_time_to_first_token_seconds",
        "lingma_gw_worker_session_cache",
        "lingma_gw_worker_upstream_429",
    } <= set(families)
    samples = families["lingma_gw_worker_requests"].samples
    assert any(s.labels == {"model": "auto", "status": "ok"} and s.value >= 1 for s in samples)
    now = time.time()
    reply = await client.call(lambda i: Ping(id=i, sent_at=now), 5.0)
    assert isinstance(reply, Pong) and reply.sent_at == now and reply.models >= 6
    assert reply.binary_pid and reply.login == "logged_in"


async def test_bad_frames_get_typed_errors(worker: WorkerProcess) -> None:
    stream = await open_framed(worker.spec.socket_path, WorkerReply)
    try:
        stream.writer.write(struct.pack(">I", 3) + b"\xc1\xc1\xc1")
        reply: Any = await stream.recv()
        assert isinstance(reply, Failure) and (reply.id, reply.code) == (0, ErrorCode.BAD_FRAME)
        await stream.send(Ping(id=7))
        assert isinstance(await stream.recv(), Pong)  # still serving this connection
        stream.writer.write(struct.pack(">I", MAX_FRAME + 1))
        reply = await stream.recv()
        assert isinstance(reply, Failure) and reply.code is ErrorCode.BAD_FRAME
        with pytest.raises(ConnectionClosed):
            await stream.recv()
    finally:
        await stream.close()


async def test_a_connection_lost_before_any_output_is_retried_once(
    worker: WorkerProcess, client: MuxClient
) -> None:
    worker.set_script([{"match": "flaky", "action": "drop", "times": 1}])
    result = await chat(client, "flaky line")
    assert "You said: flaky line" in result.text
    asked = [r for r in worker.records() if r["text"] == "flaky line"]
    assert len(asked) == 2 and asked[0]["request_id"] != asked[1]["request_id"]
    # Once output has reached the client, a lost connection is a failure, not a retry.
    worker.set_script([{"match": "flaky", "reply": "half", "action": "drop"}])
    dropped = await chat(client, "flaky again")
    assert dropped.failure.code is ErrorCode.UPSTREAM_ERROR and dropped.text == "half"
