"""A real worker over an emulator without ACP (VS Code build): AUTO falls back to chat/ask.

The emulator also runs with strict acks (each push waits for our ack, so a client that does not
ack hangs), split frames (every message cut across two WebSocket frames) and the off-by-one
quirk (an answer whose step pushes were not acked goes to the next ask, lingma-protocol.md §6.1):
acking every push is the worker's mitigation, so every chat here must get its own answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from protocol.channel import MuxClient
from protocol.chat import ChatRequest, FinishReason, Message, Reasoning
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

LEGACY_EMULATOR = {
    "LINGMA_EMULATOR_NO_ACP": "1",
    "LINGMA_EMULATOR_STRICT_ACK": "1",
    "LINGMA_EMULATOR_FRAME_MODE": "split",
    "LINGMA_EMULATOR_OFF_BY_ONE": "1",
}


@pytest.fixture(scope="module")
def worker() -> Iterator[WorkerProcess]:
    root = Path(tempfile.mkdtemp(prefix="lgw-", dir="/tmp"))
    children = ChildProcesses()
    try:
        spec = make_spec(
            root,
            env=LEGACY_EMULATOR,
            rpc_timeout_s=3.0,
            first_token_timeout_s=3.0,
            legacy_session_reuse=True,  # opt-in: chat/ask history per session is undocumented
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


async def test_auto_flow_falls_back_to_legacy_chat_ask(
    worker: WorkerProcess, client: MuxClient
) -> None:
    # The worker's very first chats, all at once: each finds session/new missing, and every
    # one of them must fall back (not only the one that switched the worker to legacy).
    texts = ["hello legacy 你好", *(f"first chat number {n}" for n in range(2, 9))]
    results = await asyncio.gather(*(chat(client, text) for text in texts))
    for text, result in zip(texts, results, strict=True):
        assert f"You said: {text}" in result.text
    records = {record["text"]: record for record in worker.records()}
    for text, result in zip(texts, results, strict=True):
        record = records[text]
        assert (record["flow"], record["model"]) == ("legacy", "auto")
        assert record["session_id"] == result.finish.upstream_session != ""


async def test_opted_in_follow_up_continues_the_legacy_session_with_the_delta_only(
    worker: WorkerProcess, client: MuxClient
) -> None:
    first = await chat(client, [Message(role="system", text="Be kind."), user("one")])
    history = [
        Message(role="system", text="Be kind."),
        user("one"),
        Message(role="assistant", text=first.text),
    ]
    second = await chat(client, [*history, user("two")])
    assert second.finish.session_reused
    records = worker.records()[-2:]
    assert [r["text"] for r in records] == ["[system] Be kind.\n[user] one", "two"]
    assert records[0]["session_id"] == records[1]["session_id"] == first.finish.upstream_session


async def test_think_fences_become_reasoning(client: MuxClient) -> None:
    result = await chat(client, "ponder", model="dashscope_qwen_plus_20250428_thinking")
    assert any(isinstance(e, Reasoning) for e in result.events)
    assert result.reasoning.startswith("[lingma-emulator") and "````" not in result.reasoning
    assert result.text.startswith("[lingma-emulator") and "think::" not in result.text


async def test_silence_from_the_runtime_is_an_upstream_timeout(
    worker: WorkerProcess, client: MuxClient
) -> None:
    worker.set_script([{"match": "mute", "action": "hang"}])  # accepted, then never a word
    failure = (await chat(client, "mute please")).failure
    assert failure.code is ErrorCode.UPSTREAM_TIMEOUT and "no answer within 3s" in failure.message


async def test_cancel_sends_chat_stop(worker: WorkerProcess, client: MuxClient) -> None:
    worker.set_script([{"match": "forever", "reply": "some words", "action": "hang"}])
    request = ChatRequest(
        id=client.next_id(), request_id="stop-me", model="auto", messages=[user("talk forever")]
    )
    async with contextlib.aclosing(client.stream(request)) as events:
        async for _event in events:
            break  # closing the stream early sends Cancel(id)
    upstream_id = worker.records()[-1]["request_id"]

    async def stopped() -> bool:
        return upstream_id in request_ids_stopped(worker.emulator_log())

    await wait_until_async(stopped, 5.0, "chat/stop to end the legacy turn")

    async def idle() -> bool:
        return (await pong(client)).stats.in_flight == 0

    await wait_until_async(idle, 5.0, "the cancelled chat to be released")


async def test_an_overwrite_replaces_a_non_streamed_answer_only(
    worker: WorkerProcess, client: MuxClient
) -> None:
    worker.set_script([{"match": "redo", "reply": "first draft", "overwrite": "clean copy"}])
    held = await chat(client, "redo it", stream=False)
    assert held.text == "clean copy"  # the runtime replaced the text (§5.3 overwrite)
    streamed = await chat(client, "redo it again")
    assert streamed.text == "first draft"  # already sent: logged, not taken back
    assert "cannot take them back" in worker.log_path.read_text()


async def test_a_filtered_answer_ends_as_a_content_filter(
    worker: WorkerProcess, client: MuxClient
) -> None:
    worker.set_script([{"match": "forbidden", "reply": "Some", "filtered": True}])
    result = await chat(client, "forbidden topic")
    assert result.finish.reason is FinishReason.CONTENT_FILTER and result.text == "Some"


async def test_a_lease_lost_before_any_output_is_retried_once(
    worker: WorkerProcess, client: MuxClient
) -> None:
    worker.set_script([{"match": "flaky", "action": "drop", "times": 1}])
    result = await chat(client, "flaky legacy")
    assert "You said: flaky legacy" in result.text
    assert len([r for r in worker.records() if r["text"] == "flaky legacy"]) == 2
