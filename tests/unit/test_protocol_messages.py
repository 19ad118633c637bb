"""Every IPC message survives an encode/decode round trip through its direction's union."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from protocol import messages as m

pytestmark = pytest.mark.unit

WORKER_REQUESTS: list[Any] = [
    m.ChatRequest(
        id=1,
        request_id="req-1",
        model="claude-3-5-sonnet",
        messages=[m.Message(role="system", text="be brief"), m.Message(role="user", text="你好")],
        tools=[m.ToolSpec(name="get_weather", parameters_json='{"type":"object"}')],
        tool_choice="required",
        max_tokens=128,
        stream=False,
        affinity="a" * 16,
        scope="k" * 16,
        deadline=1.5e9,
    ),
    m.Cancel(id=2),
    m.Ping(id=3, sent_at=12.5),
    m.ModelsQuery(id=4),
    m.ModelsRawQuery(id=5),
    m.StatsQuery(id=6),
    m.LoginStart(id=7),
    m.LoginStatusQuery(id=8),
    m.SessionExport(id=9),
    m.ClearCooldown(id=10),
    m.Drain(id=11, grace_s=3.0),
]

WORKER_REPLIES: list[Any] = [
    m.Delta(id=1, text="he"),
    m.Reasoning(id=1, text="thinking"),
    m.ToolCall(id=1, call_id="c1", name="read_file", arguments_json='{"path":"a"}'),
    m.Finish(
        id=1,
        reason=m.FinishReason.TOOL_CALLS,
        usage=m.Usage(prompt_tokens=3, completion_tokens=4),
        upstream_session="s-1",
        served_by="acct-a",
        model="auto",
        first_token_ms=1.5,
        total_ms=9.0,
        session_reused=True,
    ),
    m.Failure(id=1, code=m.ErrorCode.UPSTREAM_RATE_LIMITED, message="429", retry_after=30.0),
    m.Pong(
        id=2,
        account="acct-a",
        state=m.WorkerState.DEGRADED,
        login=m.LoginState.LOGGED_OUT,
        pid=10,
        binary_pid=11,
        stats=m.WorkerStats(in_flight=2, sessions=5),
    ),
    m.Models(id=3, account="a", models=[m.ModelInfo(key="auto", scenes=["chat"])], aliases={}),
    m.ModelsRaw(id=4, account="a", raw={"chat": [{"key": "auto"}]}),
    m.Stats(
        id=5,
        account="a",
        stats=m.WorkerStats(),
        metrics=[
            m.MetricFamily(
                name="x",
                kind="counter",
                help="h",
                samples=[m.MetricSample(name="x_total", labels={"a": "b"}, value=1.0)],
            )
        ],
    ),
    m.LoginInfo(id=6, account="a", login=m.LoginState.LOGGING_IN, url="http://127.0.0.1/x"),
    m.SessionBundle(id=7, account="a", raw_bytes=10, bundle_b64="AAAA"),
    m.Ok(id=8, message="done"),
]

CONTROL_REQUESTS: list[Any] = [
    m.StatusQuery(),
    m.ReloadRequest(),
    m.RestartWorker(name="acct-a"),
    m.LoginRequest(name="acct-a"),
    m.ExportSessionRequest(name="acct-a"),
    m.StatsRequest(),
    m.MetricsRequest(),
]

CONTROL_REPLIES: list[Any] = [
    m.StatusReply(
        version="0.1.0",
        pid=1,
        uptime_s=2.0,
        listen="127.0.0.1:8080",
        workers=[m.WorkerStatus(name="acct-a", kind="worker", state=m.WorkerState.READY)],
        fronts=[],
    ),
    m.ControlOk(message="ok", data={"url": "x"}),
    m.ControlError(code=m.ErrorCode.NOT_FOUND, message="no such worker"),
    m.MetricsReply(text="# HELP x\n"),
]

FRONT_REQUESTS: list[Any] = [
    m.Ping(id=1),
    m.StatsQuery(id=2),
    m.WorkersUpdate(id=3, workers=[m.WorkerRef(name="a", socket_path="/run/x.sock")]),
    m.Drain(id=4),
]

CASES = (
    [(msg, m.WorkerRequest) for msg in WORKER_REQUESTS]
    + [(msg, m.WorkerReply) for msg in WORKER_REPLIES]
    + [(msg, m.ControlRequest) for msg in CONTROL_REQUESTS]
    + [(msg, m.ControlReply) for msg in CONTROL_REPLIES]
    + [(msg, m.FrontRequest) for msg in FRONT_REQUESTS]
)


@pytest.mark.parametrize(("message", "union"), CASES, ids=lambda v: type(v).__name__)
def test_round_trip_through_its_union(message: Any, union: Any) -> None:
    decoded = msgspec.msgpack.Decoder(union).decode(msgspec.msgpack.encode(message))
    assert decoded == message
    assert type(decoded) is type(message)


def test_every_union_member_is_covered() -> None:
    covered = {type(msg) for msg, _ in CASES}
    for union in (m.WorkerRequest, m.WorkerReply, m.ControlRequest, m.ControlReply):
        assert set(union.__args__) <= covered, union


def test_tags_are_unique_within_each_union() -> None:
    for union in (m.WorkerRequest, m.WorkerReply, m.ControlRequest, m.ControlReply):
        tags = [cls.__struct_config__.tag for cls in union.__args__]
        assert len(tags) == len(set(tags)), union


def test_messages_are_frozen() -> None:
    with pytest.raises(AttributeError):
        m.Cancel(id=1).id = 2  # type: ignore[misc]


def test_wrong_direction_is_rejected() -> None:
    reply_bytes = msgspec.msgpack.encode(m.Delta(id=1, text="x"))
    with pytest.raises(msgspec.ValidationError):
        msgspec.msgpack.Decoder(m.WorkerRequest).decode(reply_bytes)


def test_specs_round_trip_as_json_and_msgpack() -> None:
    spec = m.WorkerSpec(name="a", socket_path="/r/a.sock", binary="/bin/x", work_dir="/s/a")
    assert msgspec.json.decode(msgspec.json.encode(spec), type=m.WorkerSpec) == spec
    front = m.FrontSpec(
        index=0,
        host="127.0.0.1",
        port=8080,
        reuse_port=False,
        socket_path="/r/f.sock",
        control_socket="/r/c.sock",
        workers=[m.WorkerRef(name="a", socket_path="/r/a.sock")],
    )
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(front), type=m.FrontSpec) == front
