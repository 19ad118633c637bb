"""The worker's client side against the runtime's documented shape variants (lingma-protocol.md).

Each test names the spec section whose variant it pins: push ids as strings or absent (§3.6),
`result: null` next to `error` (§3.6), `success` vs `isSuccess` (§5.3, §6.10), `statusCode` as a
string and a missing `fullAnswer` (§5.3), a `chat/finish` that never comes (§5.3 fallback),
`{success: false}` from `config/updateEndpoint` (§5.2). No sockets: a fake WebSocket or a fake
connection stands in for the runtime, and silences are zero-length.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest

from protocol.vocabulary import ErrorCode
from tests.specs import worker_spec
from worker.acp import AcpFlow, acp_event
from worker.legacy import IDLE_END_REASON, LegacyFlow
from worker.login import LoginManager
from worker.lsp import LspDecoder, encode_message
from worker.routes import CLOSED_PUSH
from worker.rpc import RpcConnection, RpcError, refused
from worker.upstream import (
    Ask,
    End,
    Event,
    NoAcp,
    Overwrite,
    PushQueue,
    Stage,
    Text,
    Thought,
    Timers,
    TurnClock,
    UpstreamFailure,
)

pytestmark = pytest.mark.unit

ASK = Ask(
    request_id="r1",
    session_id="s1",
    question="q",
    model_key="auto",
    mode="chat",
    is_reply=False,
    cwd="/w",
)


# --------------------------------------------------------------------------- fakes


class FakeSocket:
    """Stands in for aiohttp's client WebSocket: records sends, yields no frames until closed."""

    def __init__(self) -> None:
        self.sent: list[Any] = []
        self._closed = asyncio.Event()

    async def send_frame(self, payload: bytes, _opcode: int) -> None:
        self.sent.extend(LspDecoder().feed(payload))

    async def close(self) -> None:
        self._closed.set()

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._frames()

    async def _frames(self) -> AsyncIterator[Any]:
        await self._closed.wait()
        return
        yield  # an async generator that ends when the socket closes


class FakeConnection:
    """Answers `chat/ask` (or whatever `replies` says) and records every call and notification.

    `session/prompt` (sent without waiting, §5.4) gets an answer that never comes.
    """

    def __init__(self, replies: dict[str, Any] | None = None) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self._replies = {"chat/ask": {"success": True}, **(replies or {})}

    async def call(self, method: str, params: dict[str, Any] | None, timeout: float) -> Any:
        self.calls.append((method, params or {}))
        return self._replies.get(method)

    async def begin_call(self, method: str, params: dict[str, Any]) -> asyncio.Future[Any]:
        self.calls.append((method, params))
        return asyncio.get_running_loop().create_future()

    async def notify(self, method: str, params: dict[str, Any] | None = None) -> None:
        self.calls.append((method, params or {}))


# Zero windows: "nothing more is coming" once the queued pushes are read.
NO_WAIT = Timers(
    call_s=1.0,
    setup_s=0.0,
    first_token_s=0.0,
    silence_s=0.0,
    legacy_idle_end_s=0.0,
    stop_settle_s=0.0,
)


def legacy_pushes(*pushes: tuple[str, dict[str, Any]]) -> tuple[FakeConnection, PushQueue]:
    conn = FakeConnection()
    queue = PushQueue()
    for method, params in pushes:
        queue.put(method, params)
    return conn, queue


async def run_legacy(conn: FakeConnection, queue: PushQueue) -> list[Event]:
    stream = LegacyFlow().stream(cast(RpcConnection, conn), queue, ASK, NO_WAIT)
    return [event async for event in stream]


def answer(text: str, **extra: Any) -> tuple[str, dict[str, Any]]:
    return "chat/answer", {"requestId": "r1", "sessionId": "s1", "text": text, **extra}


STEPS = [
    ("chat/process_step_callback", {"requestId": "r1", "step": "step_start", "status": "done"}),
    ("chat/process_step_callback", {"requestId": "r1", "step": "step_end", "status": "done"}),
    ("session/title/update", {"sessionId": "s1", "sessionTitle": "pong"}),
]


# --------------------------------------------------------------------------- §3.6 pushes, errors


async def test_pushes_are_acked_with_their_own_id_and_id_less_ones_are_not() -> None:
    socket = FakeSocket()
    conn = RpcConnection(cast(Any, socket), "ws://fake/")
    routed = PushQueue()
    conn.routes.subscribe(routed, request_id="r1", session_id="s1", unaddressed=True)
    try:
        ours = {"requestId": "r1"}
        await conn._dispatch(
            {"jsonrpc": "2.0", "id": "srv-7", "method": "chat/answer", "params": ours}
        )
        await conn._dispatch({"jsonrpc": "2.0", "id": 12, "method": "extension/register"})
        await conn._dispatch({"jsonrpc": "2.0", "method": "session/update", "params": {"a": 1}})
        assert socket.sent == [
            {"jsonrpc": "2.0", "id": "srv-7", "result": None},
            {"jsonrpc": "2.0", "id": 12, "result": None},
        ]
        methods = []
        while (push := await routed.next(0)) is not None:
            methods.append(push[0])
        assert methods == ["chat/answer", "extension/register", "session/update"]
    finally:
        await conn.close()


async def test_an_error_next_to_a_null_result_fails_the_call() -> None:
    socket = FakeSocket()
    conn = RpcConnection(cast(Any, socket), "ws://fake/")
    try:
        pending = await conn.begin_call("codebase/recommendation", {})
        call_id = socket.sent[0]["id"]
        error = {"code": -32601, "message": "method not found: codebase/recommendation"}
        await conn._dispatch({"jsonrpc": "2.0", "result": None, "error": error, "id": call_id})
        with pytest.raises(RpcError) as info:
            await pending
        assert (info.value.code, info.value.message) == (-32601, error["message"])
    finally:
        await conn.close()


def test_frames_we_send_count_bytes_and_carry_object_params() -> None:
    (message,) = LspDecoder().feed(encode_message({"method": "m", "params": {"t": "好"}}))
    assert message == {"method": "m", "params": {"t": "好"}}


# --------------------------------------------------------------------------- §5.3 legacy chat


def test_refusal_is_read_from_either_spelling() -> None:
    assert refused({"success": False}) and refused({"isSuccess": False})
    assert not refused({"success": True}) and not refused({"requestId": ""})
    assert not refused(None) and not refused({"success": None})


async def test_an_is_success_false_acceptance_fails_the_ask() -> None:
    conn = FakeConnection({"chat/ask": {"isSuccess": False, "errorMessage": "user not login"}})
    queue = PushQueue()
    with pytest.raises(UpstreamFailure) as info:
        await run_legacy(conn, queue)
    assert info.value.code is ErrorCode.NOT_LOGGED_IN


async def test_finish_with_a_string_status_and_no_full_answer() -> None:
    conn, queue = legacy_pushes(
        *STEPS,
        answer("pon"),
        answer("", overwrite=False, isFiltered=False),
        ("chat/answer", {"requestId": "other", "text": "not ours"}),
        answer("g"),
        ("chat/think", {"requestId": "r1", "text": "hm", "step": "start"}),
        (
            "chat/finish",
            {"requestId": "r1", "sessionId": "s1", "reason": "busy", "statusCode": "429"},
        ),
    )
    events = await run_legacy(conn, queue)
    assert events == [Text("pon"), Text(""), Text("g"), Thought("hm"), End(429, "busy", "")]


async def test_a_missing_chat_finish_ends_the_answer_after_silence() -> None:
    conn, queue = legacy_pushes(*STEPS, answer("pon"), answer(""), answer("g"), answer(""))
    events = await run_legacy(conn, queue)
    assert events == [Text("pon"), Text(""), Text("g"), Text(""), End(200, IDLE_END_REASON)]
    # The runtime's turn is stopped, so the connection can take the next ask.
    assert [method for method, _ in conn.calls] == ["chat/ask", "chat/stop"]
    assert conn.calls[-1][1] == {"requestId": "r1", "sessionId": "s1"}


async def test_silence_before_any_answer_text_stays_a_timeout() -> None:
    conn, queue = legacy_pushes(
        *STEPS, answer(""), ("chat/think", {"requestId": "r1", "text": "x"})
    )
    with pytest.raises(UpstreamFailure) as info:
        await run_legacy(conn, queue)
    assert info.value.code is ErrorCode.UPSTREAM_TIMEOUT
    assert [method for method, _ in conn.calls] == ["chat/ask"]


async def test_a_lost_connection_after_text_is_not_a_success() -> None:
    conn, queue = legacy_pushes(*STEPS, answer("partial"), (CLOSED_PUSH, {}))
    with pytest.raises(UpstreamFailure) as info:
        await run_legacy(conn, queue)
    assert info.value.code is ErrorCode.UPSTREAM_ERROR


async def test_overwrite_and_is_filtered_are_told_apart_from_plain_deltas() -> None:
    conn, queue = legacy_pushes(
        *STEPS,
        answer("draft"),
        answer("final text", overwrite=True),
        answer("[filtered]", isFiltered=True),
        answer("never read"),
    )
    events = await run_legacy(conn, queue)
    assert events == [
        Text("draft"),
        Overwrite("final text"),
        End(200, "content_filter", filtered=True),
    ]
    # The filtered turn is stopped at once: its connection can take the next ask.
    assert [method for method, _ in conn.calls] == ["chat/ask", "chat/stop"]


async def test_a_failed_step_makes_a_success_finish_a_failure() -> None:
    failed_step = (
        "chat/process_step_callback",
        {"requestId": "r1", "step": "step_end", "status": "error", "message": "quota exceeded"},
    )
    finish = ("chat/finish", {"requestId": "r1", "reason": "success"})
    conn, queue = legacy_pushes(failed_step, finish)
    (end,) = await run_legacy(conn, queue)
    assert isinstance(end, End) and end.status_code == 429 and "quota" in end.reason


def test_silence_is_timed_over_output_not_over_any_push() -> None:
    clock = TurnClock(
        Timers(call_s=1.0, setup_s=1.0, first_token_s=100.0, silence_s=5.0, legacy_idle_end_s=1.0)
    )
    before = clock.remaining()
    clock.heard(output=False)  # a step callback or usage push: not the first token
    assert clock.stage is Stage.FIRST_TOKEN and clock.remaining() <= before
    assert "first-token" in clock.expired().message
    clock.heard(output=True)
    stage: Stage = clock.stage  # (re-read: mypy narrowed the attribute above)
    assert stage is Stage.FLOWING and clock.remaining() <= 5.0
    assert "nothing for 5s" in clock.expired().message
    clock.idle_ends()  # legacy text arrived: a short silence now completes the answer
    assert clock.ends_on_silence and clock.remaining() <= 1.0


# --------------------------------------------------------------------------- §5.4 ACP updates


async def test_acp_turn_ends_on_a_finish_without_status_and_ignores_other_requests() -> None:
    conn = FakeConnection()
    queue = PushQueue()

    def update(kind: str, text: str, request_id: str = "r1") -> tuple[str, dict[str, Any]]:
        meta = {"ai-coding/request-id": request_id}
        content = {"sessionUpdate": kind, "content": {"type": "text", "text": text}}
        return "session/update", {"sessionId": "s1", "_meta": meta, "update": content}

    finish = {"sessionUpdate": "notification", "type": "chat_finish", "data": {"reason": "ok"}}
    for method, params in (
        ("snapshot/syncAll", {}),
        update("agent_thought_chunk", "hm"),
        update("agent_message_chunk", "other chat", request_id="r9"),
        update("agent_message_chunk", "pong"),
        (
            "session/update",
            {"sessionId": "s1", "_meta": {"ai-coding/request-id": "r1"}, "update": finish},
        ),
    ):
        queue.put(method, params)
    stream = AcpFlow().stream(cast(RpcConnection, conn), queue, ASK, NO_WAIT)
    events = [event async for event in stream]
    assert events == [Thought("hm"), Text("pong"), End(200, "ok", "")]
    assert conn.calls[0][0] == "session/prompt"
    assert conn.calls[0][1]["_meta"]["ai-coding/request-id"] == "r1"


async def test_acp_error_notification_fails_the_turn() -> None:
    conn = FakeConnection()
    queue = PushQueue()
    meta = {"ai-coding/request-id": "r1"}
    error = {"sessionUpdate": "notification", "type": "error", "data": {"message": "Login expired"}}
    finish = {"sessionUpdate": "notification", "type": "chat_finish", "data": {"reason": "done"}}
    queue.put("session/update", {"sessionId": "s1", "_meta": meta, "update": error})
    queue.put("session/update", {"sessionId": "s1", "_meta": meta, "update": finish})
    stream = AcpFlow().stream(cast(RpcConnection, conn), queue, ASK, NO_WAIT)
    (end,) = [event async for event in stream]
    assert isinstance(end, End) and end.status_code == 401


async def test_acp_cancel_is_a_notification() -> None:
    conn = FakeConnection()
    await AcpFlow().stop(cast(RpcConnection, conn), ASK, NO_WAIT)
    assert conn.calls == [
        ("session/cancel", {"sessionId": "s1", "_meta": {"ai-coding/request-id": "r1"}})
    ]


class SessionNew:
    """A connection whose session/new fails or hangs, and whose set_model may fail."""

    def __init__(self, new: Any, set_model: Any = None) -> None:
        self.new, self.set_model = new, set_model
        self.calls: list[str] = []

    async def call(self, method: str, params: dict[str, Any] | None, timeout: float) -> Any:
        self.calls.append(method)
        answer = self.new if method == "session/new" else self.set_model
        if isinstance(answer, BaseException):
            raise answer
        return answer


@pytest.mark.parametrize(
    "new",
    [
        RpcError(-32601, "method not found: session/new"),
        RpcError(-32603, "internal error"),
        TimeoutError(),  # no answer within the setup timeout (§6.13)
        {"unexpected": True},  # no session id
    ],
)
async def test_any_session_new_failure_means_no_acp(new: Any) -> None:
    conn = SessionNew(new)
    with pytest.raises(NoAcp):
        await AcpFlow().open_session(cast(RpcConnection, conn), ASK, NO_WAIT)


async def test_set_model_errors_fail_the_chat_only_for_an_unknown_model() -> None:
    flow = AcpFlow()
    shrug = SessionNew({"sessionId": "s9"}, RpcError(-32603, "internal error"))
    assert await flow.open_session(cast(RpcConnection, shrug), ASK, NO_WAIT) == "s9"
    silent = SessionNew({"id": "s8"}, TimeoutError())
    assert await flow.open_session(cast(RpcConnection, silent), ASK, NO_WAIT) == "s8"
    unknown = SessionNew({"sessionId": "s7"}, RpcError(-32602, "model not found: llama"))
    with pytest.raises(UpstreamFailure) as info:
        await flow.open_session(cast(RpcConnection, unknown), ASK, NO_WAIT)
    assert info.value.code is ErrorCode.UNKNOWN_MODEL


def test_acp_chunk_content_may_be_a_list_of_parts() -> None:
    parts = [{"type": "text", "text": "a"}, {"type": "image", "data": "..."}, {"text": "b"}]
    assert acp_event({"sessionUpdate": "agent_message_chunk", "content": parts}) == Text("ab")
    assert acp_event({"sessionUpdate": "agent_thought_chunk", "content": parts}) == Thought("ab")
    no_text = {"sessionUpdate": "agent_message_chunk", "content": [{"type": "image"}]}
    assert acp_event(no_text) is None


# --------------------------------------------------------------------------- §5.2 endpoint


class FakeClient:
    def __init__(self, update_result: Any) -> None:
        self.update_result = update_result

    async def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        return {"endpoint": ""} if method == "config/getEndpoint" else self.update_result


@pytest.mark.parametrize(
    ("result", "refusal"),
    [({"success": True}, False), ({"success": False, "errorMessage": "bad domain"}, True)],
)
async def test_an_update_endpoint_refusal_is_reported_not_logged_as_applied(
    caplog: pytest.LogCaptureFixture, result: dict[str, Any], refusal: bool
) -> None:
    spec = worker_spec(
        name="a",
        socket_path="/nowhere",
        binary="x",
        work_dir="/nowhere",
        dedicated_domain_url="https://lingma.example.com",
    )
    manager = LoginManager(spec, lambda: cast(Any, FakeClient(result)))
    with caplog.at_level(logging.INFO, logger="worker.login"):
        await manager.apply_endpoint()
    messages = [record.getMessage() for record in caplog.records]
    assert any("refused the dedicated endpoint: bad domain" in m for m in messages) is refusal
    assert ("dedicated endpoint applied" in messages) is not refusal
