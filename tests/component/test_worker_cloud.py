"""A real worker with backend = "cloud" over the real emulator (runtime + cloud stand-in).

The §14.16 scenarios at the worker: readiness needs runtime login AND a decrypting credential,
models from the cloud list, deltas as they arrive (a slow stream keeps its spacing), native
tool calls and structured follow-ups (checked in the stand-in's record), every error path,
credential rotation without a restart, concurrency, images, and — with three more workers —
log-line discovery with wire variants, an LP credential file, and a wrong domain.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from emulator.store import WorkDir
from emulator.user_cache import new_user
from protocol.channel import MuxClient
from protocol.chat import (
    ChatRequest,
    ChatTurn,
    FinishReason,
    ImageInput,
    PriorToolCall,
    ToolCall,
    ToolSpec,
)
from protocol.vocabulary import Backend, ChildState, ErrorCode
from protocol.worker_socket import ClearCooldown, Models, ModelsQuery
from tests.component.worker_support import (
    ChatResult,
    WorkerProcess,
    chat,
    log_in,
    logged_in_worker,
    make_spec,
    pong,
    ready_client,
    start_worker,
    wait_state,
)
from tests.helpers import PYTHON, ChildProcesses, free_port, wait_until_async

pytestmark = pytest.mark.component

CLOUD = {"LINGMA_EMULATOR_CLOUD": "1"}
WEATHER_TOOL = ToolSpec(
    name="get_weather",
    description="Weather by city",
    parameters_json='{"type":"object","properties":{"city":{"type":"string"}}}',
)
WEATHER_RULE = {
    "match": "weather",
    "tool_call": {"name": "get_weather", "arguments": {"city": "Paris"}},
}
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(32)).decode()


def cloud_spec(root: Path, name: str, env: dict[str, str] | None = None, **overrides: Any) -> Any:
    return make_spec(
        root, name=name, env={**CLOUD, **(env or {})}, backend=Backend.CLOUD, **overrides
    )


@pytest.fixture(scope="module")
def worker() -> Iterator[WorkerProcess]:
    with logged_in_worker(
        lambda root: cloud_spec(root, "cloud-a", cooldown_s=1.0, max_concurrency=4)
    ) as process:
        yield process


@pytest.fixture
async def client(worker: WorkerProcess) -> AsyncIterator[MuxClient]:
    async with ready_client(worker) as mux:
        yield mux


def say(text: str) -> list[ChatTurn]:
    return [ChatTurn(role="user", text=text)]


async def cloud_chat(client: MuxClient, turns: list[ChatTurn], **options: Any) -> ChatResult:
    return await chat(client, "", turns=turns, **options)


def chat_records(worker: WorkerProcess) -> list[dict[str, Any]]:
    return [
        r
        for r in worker.records()
        if r.get("event") == "cloud" and r["path"].endswith("agent_chat_generation")
    ]


# --------------------------------------------------------------------------- serving


async def test_ready_with_the_cloud_model_list(client: MuxClient) -> None:
    state = await pong(client)
    assert state.state is ChildState.READY and state.backend is Backend.CLOUD and not state.note
    models = await client.call(lambda i: ModelsQuery(id=i), 5.0)
    assert isinstance(models, Models)
    keys = [m.key for m in models.models]
    assert "org_auto" in keys and len(keys) == len(set(keys))  # scenes merged, no duplicates
    thinking = next(m for m in models.models if m.key == "dashscope_qwen_plus_20250428_thinking")
    assert thinking.display_name == "Qwen3-Thinking" and thinking.is_reasoning
    assert {"chat", "quest"} <= set(thinking.scenes) and sum(m.is_vl for m in models.models) == 2


async def test_plain_chat_usage_and_model_key(worker: WorkerProcess, client: MuxClient) -> None:
    result = await cloud_chat(client, say("hello cloud"), model="Kimi-K2.6")
    assert (
        "hello cloud" in result.text
        and len([e for e in result.events if type(e).__name__ == "Delta"]) >= 2
    )
    finish = result.finish
    assert finish.reason is FinishReason.STOP and finish.model == "kmodel"
    assert finish.usage.completion_tokens > 0 and finish.served_by == "cloud-a"
    record = chat_records(worker)[-1]
    assert record["body"]["model_config"]["key"] == "kmodel" and record["auth"]["status"] == 200


async def test_slow_stream_keeps_its_spacing(worker: WorkerProcess, client: MuxClient) -> None:
    worker.set_script([{"reply": "one two three four five six", "chunk_delay_ms": 150}])
    arrivals: list[tuple[str, float]] = []
    request = say("slowly")
    started = time.monotonic()
    chat_request = ChatRequest(
        id=client.next_id(), request_id="slow", model="auto", messages=[], turns=request
    )
    async for event in client.stream(chat_request):
        arrivals.append((type(event).__name__, time.monotonic() - started))
    deltas = [at for kind, at in arrivals if kind == "Delta"]
    assert arrivals[-1][0] == "Finish" and len(deltas) >= 3
    assert arrivals[-1][1] - deltas[0] >= 0.3  # the first byte long before the last
    assert all(b - a >= 0.1 for a, b in itertools.pairwise(deltas))


async def test_native_tool_call_then_structured_follow_up(
    worker: WorkerProcess, client: MuxClient
) -> None:
    worker.set_script([WEATHER_RULE])
    system = ChatTurn(role="system", text="You are terse.")
    question = ChatTurn(role="user", text="What's the weather?")
    first = await cloud_chat(client, [system, question], tools=[WEATHER_TOOL])
    calls = [e for e in first.events if isinstance(e, ToolCall)]
    assert len(calls) == 1 and first.finish.reason is FinishReason.TOOL_CALLS
    call = calls[0]
    assert call.call_id.startswith("call_") and json.loads(call.arguments_json) == {"city": "Paris"}
    sent = chat_records(worker)[-1]["body"]
    assert sent["tools"][0]["function"]["parameters"]["properties"] == {"city": {"type": "string"}}
    assert "tool_choice" not in sent
    prior = PriorToolCall(call_id=call.call_id, name=call.name, arguments_json=call.arguments_json)
    follow_up = [
        system,
        question,
        ChatTurn(role="assistant", tool_calls=[prior]),
        ChatTurn(role="tool", text="sunny, 25C", tool_call_id=call.call_id),
    ]
    second = await cloud_chat(client, follow_up, tools=[WEATHER_TOOL])
    assert "sunny, 25C" in second.text and second.finish.reason is FinishReason.STOP
    messages = chat_records(worker)[-1]["body"]["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "tool"]
    assert messages[2]["tool_calls"][0]["id"] == call.call_id
    assert json.loads(messages[2]["tool_calls"][0]["function"]["arguments"]) == {"city": "Paris"}
    assert messages[3]["tool_call_id"] == call.call_id and messages[3]["content"] == "sunny, 25C"


async def test_images_are_uploaded_then_referenced(
    worker: WorkerProcess, client: MuxClient
) -> None:
    image = ImageInput(media_type="image/png", data_b64=PNG)
    turns = [ChatTurn(role="user", text="what is in it?", images=[image])]
    result = await cloud_chat(client, turns)
    assert result.finish.reason is FinishReason.STOP
    uploads = [r for r in worker.records() if r.get("path", "").endswith("image/upload")]
    body = chat_records(worker)[-1]["body"]
    assert body["image_urls"] == [uploads[-1]["image"]["url"]]
    assert (
        body["model_config"]["is_vl"] is True
        and body["messages"][0]["parts"][1]["type"] == "image_url"
    )


async def test_concurrent_chats_each_get_their_own_reply(client: MuxClient) -> None:
    texts = [f"question number {n}" for n in range(6)]
    results = await asyncio.gather(*(cloud_chat(client, say(t)) for t in texts))
    for text, result in zip(texts, results, strict=True):
        assert text in result.text and result.finish.reason is FinishReason.STOP


# --------------------------------------------------------------------------- errors


async def test_rate_limits_cool_the_account_down(worker: WorkerProcess, client: MuxClient) -> None:
    for rule, wait in (
        ({"cloud_fault": "rate_limit_inband"}, 1.0),
        ({"cloud_fault": "rate_limit_http", "retry_after_s": 3}, 3.0),
    ):
        worker.set_script([rule])
        failure = (await cloud_chat(client, say("hi"))).failure
        assert failure.code is ErrorCode.UPSTREAM_RATE_LIMITED and failure.retry_after == wait
        assert (await pong(client)).state is ChildState.DEGRADED  # cooling down
        await client.call(lambda i: ClearCooldown(id=i), 5.0)
        await wait_state(client, ChildState.READY)


async def test_5xx_is_retried_once_then_reported_retryable(
    worker: WorkerProcess, client: MuxClient
) -> None:
    worker.set_script([{"cloud_fault": "server_error"}])
    before = len(chat_records(worker))
    failure = (await cloud_chat(client, say("hi"))).failure
    assert failure.code is ErrorCode.UPSTREAM_ERROR and failure.retryable
    assert len(chat_records(worker)) - before == 2  # one local retry, no storm
    worker.set_script([{"cloud_fault": "server_error", "times": 1}])
    assert "hi again" in (await cloud_chat(client, say("hi again"))).text  # the retry succeeds


@pytest.mark.parametrize("fault", ["cut", "truncate"])
async def test_a_broken_stream_is_never_a_complete_answer(
    worker: WorkerProcess, client: MuxClient, fault: str
) -> None:
    worker.set_script([{"cloud_fault": fault, "reply": "alpha beta gamma delta epsilon"}])
    result = await cloud_chat(client, say("hi"))
    assert result.text  # the part that arrived was relayed ...
    failure = result.failure  # ... and the chat still ends as a failure
    assert failure.code is ErrorCode.UPSTREAM_ERROR and not failure.retryable


async def test_empty_and_late_errors(worker: WorkerProcess, client: MuxClient) -> None:
    worker.set_script([{"cloud_fault": "empty"}])
    failure = (await cloud_chat(client, say("hi"))).failure
    assert (
        failure.code is ErrorCode.UPSTREAM_ERROR
        and failure.retryable
        and "empty" in failure.message
    )
    worker.set_script([{"cloud_fault": "error_after_finish", "reply": "complete answer"}])
    result = await cloud_chat(client, say("hi"))
    assert result.text == "complete answer" and result.finish.reason is FinishReason.STOP


def rotate_login(worker: WorkerProcess) -> None:
    """What the runtime does when it refreshes a login: a new key and info in cache/user."""
    WorkDir(Path(worker.spec.work_dir)).write_user(new_user("demo", uid="uid-demo"))


async def test_expired_login_rereads_once_then_rotation_recovers(
    worker: WorkerProcess, client: MuxClient
) -> None:
    worker.set_script([{"cloud_fault": "expired"}])
    before = len(chat_records(worker))
    failure = (await cloud_chat(client, say("hi"))).failure
    assert failure.code is ErrorCode.NOT_LOGGED_IN and "105" in failure.message
    assert len(chat_records(worker)) - before == 1  # re-read, unchanged: no retry
    state = await pong(client)
    assert state.state is ChildState.DEGRADED and "rejected" in state.note
    worker.set_script([])
    rotate_login(worker)  # no gateway restart: the worker re-reads cache/user
    await wait_state(client, ChildState.READY)
    assert "after rotation" in (await cloud_chat(client, say("after rotation"))).text
    assert chat_records(worker)[-1]["auth"]["status"] == 200


async def test_credential_rotated_during_a_request(
    worker: WorkerProcess, client: MuxClient
) -> None:
    worker.set_script([{"cloud_fault": "expired", "delay_ms": 600, "times": 1}])
    before = len(chat_records(worker))
    pending = asyncio.create_task(cloud_chat(client, say("rotating")))

    async def arrived() -> bool:
        return len(chat_records(worker)) > before

    await wait_until_async(arrived, 5.0, "the first attempt at the stand-in")
    rotate_login(worker)
    result = await pending
    assert "rotating" in result.text  # 105, re-read, changed, one retry with the new login
    attempts = chat_records(worker)[before:]
    assert len(attempts) == 2 and all(a["auth"]["status"] == 200 for a in attempts)


# --------------------------------------------------------------------------- other set-ups


class HttpServer:
    """`python -m http.server` on an empty directory: every API path is a 404."""

    def __init__(self, children: ChildProcesses, root: Path) -> None:
        (root / "empty").mkdir()
        self.port = free_port()
        args = [PYTHON, "-m", "http.server", str(self.port), "--bind", "127.0.0.1"]
        children.start([*args, "--directory", str(root / "empty")])


@pytest.fixture(scope="module")
def others() -> Iterator[dict[str, WorkerProcess]]:
    root = Path(tempfile.mkdtemp(prefix="lgw-", dir="/tmp"))
    children = ChildProcesses()
    try:
        wrong = HttpServer(children, root)
        specs = {
            "variants": dict(
                env={
                    "LINGMA_EMULATOR_CLOUD_ENDPOINT": "log",
                    "LINGMA_EMULATOR_CLOUD_DATA_SPACE": "1",
                    "LINGMA_EMULATOR_CLOUD_DONE": "envelope",
                    "LINGMA_EMULATOR_CLOUD_STATS": "1",
                    "LINGMA_EMULATOR_CLOUD_CHUNK_CHARS": "4",
                    "LINGMA_EMULATOR_CLOUD_LATE_TOOL_ID": "1",
                }
            ),
            "credfile": dict(
                env={
                    "LINGMA_EMULATOR_CLOUD_NO_USAGE": "1",
                    "LINGMA_EMULATOR_CLOUD_MODELS_FAIL": "1",
                },
                cloud_credential_file=str(root / "credfile" / "lp.json"),
            ),
            "wrongdomain": dict(cloud_base_url=f"http://127.0.0.1:{wrong.port}"),
        }
        processes = {}
        for name, options in specs.items():
            (root / name).mkdir()
            spec = cloud_spec(root / name, name, **options)  # type: ignore[arg-type]
            processes[name] = start_worker(children, spec, root / name)

        async def log_in_all() -> None:
            await asyncio.gather(
                *(log_in(p, ready=name != "credfile") for name, p in processes.items())
            )

        asyncio.run(log_in_all())
        yield processes
    finally:
        children.kill_all()
        shutil.rmtree(root, ignore_errors=True)


async def test_log_line_discovery_and_wire_variants(others: dict[str, WorkerProcess]) -> None:
    worker = others["variants"]
    async with ready_client(worker) as client:
        assert "(from logs/lingma.log)" in worker.log_path.read_text()  # getEndpoint said ""
        result = await cloud_chat(client, say("many small chunks please"))
        assert "many small chunks please" in result.text and len(result.events) > 8
        assert result.finish.usage.completion_tokens > 0  # from TAP's statistics line
        worker.set_script([WEATHER_RULE])
        tool = await cloud_chat(client, say("weather?"), tools=[WEATHER_TOOL])
        (call,) = [e for e in tool.events if isinstance(e, ToolCall)]
        assert call.call_id.startswith("call_") and json.loads(call.arguments_json) == {
            "city": "Paris"
        }


async def test_lp_credential_file_and_a_failing_model_list(
    others: dict[str, WorkerProcess],
) -> None:
    worker = others["credfile"]
    client = MuxClient(worker.spec.socket_path)
    try:
        state = await pong(client)
        assert state.state is ChildState.DEGRADED and "cloud credential unusable" in state.note
        workdir = WorkDir(Path(worker.spec.work_dir))
        user = workdir.read_user()
        assert user is not None
        auth = {
            "cosy_key": user.key,
            "encrypt_user_info": user.encrypt_user_info,
            "user_id": user.uid,
            "machine_id": workdir.machine_id(),
        }
        path = Path(worker.spec.cloud_credential_file)
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(msgspec.json.encode({"source": "manual", "auth": auth}))
        ready = await wait_state(client, ChildState.READY)
        assert "model list failed" in ready.note  # serving anyway: chat does not need the list
        result = await cloud_chat(client, say("from a credential file"), model="kmodel")
        assert "from a credential file" in result.text and result.finish.model == "kmodel"
        assert result.finish.usage.completion_tokens > 0  # no usage upstream: estimated
    finally:
        await client.close()


async def test_wrong_domain_is_named(others: dict[str, WorkerProcess]) -> None:
    worker = others["wrongdomain"]
    async with ready_client(worker) as client:
        state = await pong(client)  # explicit cloud_base_url wins over getEndpoint's answer
        assert "404" in state.note and "cloud_base_url" in state.note
        failure = (await cloud_chat(client, say("hi"))).failure
        assert failure.code is ErrorCode.UPSTREAM_ERROR and failure.retryable
