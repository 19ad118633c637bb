"""Every IPC message survives an encode/decode round trip through its direction's union."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from protocol import keys, usage
from protocol.chat import (
    Cancel,
    ChatRequest,
    Delta,
    Failure,
    Finish,
    FinishReason,
    Message,
    Reasoning,
    ToolCall,
    ToolSpec,
    Usage,
)
from protocol.child_socket import (
    ChildStats,
    Drain,
    MetricFamily,
    MetricSample,
    Ok,
    Ping,
    Pong,
    Stats,
    StatsQuery,
)
from protocol.control_socket import (
    ChildStatus,
    ControlReply,
    ControlRequest,
    ErrorReply,
    ExportLoginBundleRequest,
    LoginRequest,
    MetricsReply,
    MetricsRequest,
    OkReply,
    ReloadRequest,
    RestartWorkerRequest,
    StatsRequest,
    StatusReply,
    StatusRequest,
)
from protocol.front_socket import FrontRequest, WorkerRef, WorkersUpdate
from protocol.specs import FrontSpec, LoginSpec, WorkerSpec
from protocol.vocabulary import ChildKind, ChildState, ErrorCode, LoginState
from protocol.worker_socket import (
    ClearCooldown,
    LoginBundle,
    LoginBundleQuery,
    LoginInfo,
    LoginStart,
    LoginStatusQuery,
    ModelInfo,
    Models,
    ModelsQuery,
    ModelsRaw,
    ModelsRawQuery,
    WorkerReply,
    WorkerRequest,
)
from tests.specs import DEFAULT_CONFIG, front_spec, worker_spec

pytestmark = pytest.mark.unit

WORKER_REQUESTS: list[Any] = [
    ChatRequest(
        id=1,
        request_id="req-1",
        model="claude-3-5-sonnet",
        messages=[Message(role="system", text="be brief"), Message(role="user", text="你好")],
        tools=[ToolSpec(name="get_weather", parameters_json='{"type":"object"}')],
        tool_choice="required",
        max_tokens=128,
        stream=False,
        scope="k" * 16,
        deadline=1.5e9,
    ),
    Cancel(id=2),
    Ping(id=3, sent_at=12.5),
    ModelsQuery(id=4),
    ModelsRawQuery(id=5),
    StatsQuery(id=6),
    LoginStart(id=7),
    LoginStatusQuery(id=8),
    LoginBundleQuery(id=9),
    ClearCooldown(id=10),
    Drain(id=11, grace_s=3.0),
]

WORKER_REPLIES: list[Any] = [
    Delta(id=1, text="he"),
    Reasoning(id=1, text="thinking"),
    ToolCall(id=1, call_id="c1", name="read_file", arguments_json='{"path":"a"}'),
    Finish(
        id=1,
        reason=FinishReason.TOOL_CALLS,
        usage=Usage(prompt_tokens=3, completion_tokens=4),
        upstream_session="s-1",
        served_by="acct-a",
        model="auto",
        first_token_ms=1.5,
        total_ms=9.0,
        session_reused=True,
    ),
    Failure(id=1, code=ErrorCode.UPSTREAM_RATE_LIMITED, message="429", retry_after=30.0),
    Pong(
        id=2,
        name="acct-a",
        state=ChildState.DEGRADED,
        login=LoginState.LOGGED_OUT,
        pid=10,
        binary_pid=11,
        stats=ChildStats(in_flight=2, sessions=5),
    ),
    Models(id=3, account="a", models=[ModelInfo(key="auto", scenes=["chat"])], aliases={}),
    ModelsRaw(id=4, account="a", raw={"chat": [{"key": "auto"}]}),
    Stats(
        id=5,
        name="a",
        stats=ChildStats(),
        metrics=[
            MetricFamily(
                name="x",
                kind="counter",
                help="h",
                samples=[MetricSample(name="x_total", labels={"a": "b"}, value=1.0)],
            )
        ],
    ),
    LoginInfo(id=6, account="a", login=LoginState.LOGGING_IN, url="http://127.0.0.1/x"),
    LoginBundle(id=7, account="a", raw_bytes=10, bundle_b64="AAAA"),
    Ok(id=8, message="done"),
]

CONTROL_REQUESTS: list[Any] = [
    StatusRequest(),
    ReloadRequest(),
    RestartWorkerRequest(name="acct-a"),
    LoginRequest(name="acct-a"),
    ExportLoginBundleRequest(name="acct-a"),
    StatsRequest(),
    MetricsRequest(),
    keys.KeysRequest(
        action=keys.KeyAction.ADD, name="alice", sha256="ab" * 32, limits=keys.KeyLimits(rpm=5)
    ),
    usage.UsageReportRequest(
        rows=[usage.UsageRow(ts=1.0, key="alice", account="a", model="m", api="openai", status=200)]
    ),
    usage.UsageRequest(by=usage.UsageGrouping.MODEL, since_s=60.0),
]

CONTROL_REPLIES: list[Any] = [
    StatusReply(
        version="0.1.0",
        pid=1,
        uptime_s=2.0,
        listen="127.0.0.1:8080",
        workers=[ChildStatus(name="acct-a", kind=ChildKind.WORKER, state=ChildState.READY)],
        fronts=[],
    ),
    OkReply(message="ok", data={"url": "x"}),
    ErrorReply(code=ErrorCode.NOT_FOUND, message="no such worker"),
    MetricsReply(text="# HELP x\n"),
    keys.KeysReply(
        message="ok",
        keys=[
            keys.KeyInfo(
                name="alice",
                source=keys.KeySource.CLI,
                limits=keys.KeyLimits(),
                state=keys.KeyState.ACTIVE,
            )
        ],
    ),
    usage.UsageReply(ledger=usage.LedgerState.DEGRADED, ledger_note="locked"),
]

FRONT_REQUESTS: list[Any] = [
    Ping(id=1),
    StatsQuery(id=2),
    WorkersUpdate(id=3, workers=[WorkerRef(name="a", socket_path="/run/x.sock")]),
    Drain(id=4),
    keys.KeysUpdate(
        id=5,
        keys=[keys.KeyEntry(name="a", sha256="ab" * 32, source=keys.KeySource.CONFIG, slot=0)],
    ),
]

CASES = (
    [(msg, WorkerRequest) for msg in WORKER_REQUESTS]
    + [(msg, WorkerReply) for msg in WORKER_REPLIES]
    + [(msg, ControlRequest) for msg in CONTROL_REQUESTS]
    + [(msg, ControlReply) for msg in CONTROL_REPLIES]
    + [(msg, FrontRequest) for msg in FRONT_REQUESTS]
)


@pytest.mark.parametrize(("message", "union"), CASES, ids=lambda v: type(v).__name__)
def test_round_trip_through_its_union(message: Any, union: Any) -> None:
    decoded = msgspec.msgpack.Decoder(union).decode(msgspec.msgpack.encode(message))
    assert decoded == message
    assert type(decoded) is type(message)


def test_every_union_member_is_covered() -> None:
    covered = {type(msg) for msg, _ in CASES}
    for union in (WorkerRequest, WorkerReply, ControlRequest, ControlReply):
        assert set(union.__args__) <= covered, union


def test_tags_are_unique_within_each_union() -> None:
    for union in (WorkerRequest, WorkerReply, ControlRequest, ControlReply):
        tags = [cls.__struct_config__.tag for cls in union.__args__]
        assert len(tags) == len(set(tags)), union


def test_messages_are_frozen() -> None:
    with pytest.raises(AttributeError):
        Cancel(id=1).id = 2  # type: ignore[misc]


def test_wrong_direction_is_rejected() -> None:
    reply_bytes = msgspec.msgpack.encode(Delta(id=1, text="x"))
    with pytest.raises(msgspec.ValidationError):
        msgspec.msgpack.Decoder(WorkerRequest).decode(reply_bytes)


def test_specs_round_trip_as_json_and_msgpack() -> None:
    spec = worker_spec(socket_path="/r/a.sock", binary="/bin/x", work_dir="/s/a")
    assert msgspec.json.decode(msgspec.json.encode(spec), type=WorkerSpec) == spec
    front = front_spec(
        socket_path="/r/f.sock", workers=[WorkerRef(name="a", socket_path="/r/a.sock")]
    )
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(front), type=FrontSpec) == front


@pytest.mark.parametrize("spec_type", [WorkerSpec, FrontSpec, LoginSpec])
def test_specs_have_no_defaults_to_disagree_with_the_config(
    spec_type: type[msgspec.Struct],
) -> None:
    defaulted = [f.name for f in msgspec.structs.fields(spec_type) if not f.required]
    assert defaulted == []


def test_a_default_spec_carries_the_configs_defaults() -> None:
    limits = DEFAULT_CONFIG.limits
    assert worker_spec().queue_timeout_s == front_spec().queue_timeout_s == limits.queue_timeout_s
