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

from protocol.messages import ErrorCode, WorkerSpec
from worker.flows import IDLE_END_REASON, LegacyFlow, acp_event
from worker.login import LoginManager
from worker.rpc import CLOSED_PUSH, LspDecoder, RpcConnection, RpcError, encode_message, refused
from worker.upstream import Ask, End, Event, PushQueue, Text, Thought, UpstreamFailure

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

    async def send_str(self, text: str) -> None:
        self.sent.extend(LspDecoder().feed(text.encode()))

    async def close(self) -> None:
        self._closed.set()

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._frames()

    async def _frames(self) -> AsyncIterator[Any]:
        await self._closed.wait()
        return
        yield  # an async generator that ends when the socket closes


class FakeConnection:
    """Answers `chat/ask` (or whatever `replies` says) and records every call."""

    def __init__(self, replies: dict[str, Any] | None = None) -> None:
        self.on_push: Any = None
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self._replies = {"chat/ask": {"success": True}, **(replies or {})}

    async def call(self, method: str, params: dict[str, Any] | None, timeout: float) -> Any:
        self.calls.append((method, params or {}))
        return self._replies.get(method)


def legacy_pushes(*pushes: tuple[str, dict[str, Any]]) -> tuple[FakeConnection, PushQueue]:
    conn = FakeConnection()
    queue = PushQueue(cast(RpcConnection, conn))
    for method, params in pushes:
        queue.put(method, params)
    return conn, queue


async def run_legacy(conn: FakeConnection, queue: PushQueue) -> list[Event]:
    """The legacy flow's events; a zero silence window means "nothing more is coming"."""
    stream = LegacyFlow().stream(cast(RpcConnection, conn), queue, ASK, 0)
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
    routed: list[tuple[str, dict[str, Any]]] = []
    conn.on_push = lambda method, params: routed.append((method, params))
    try:
        await conn._dispatch(
            {"jsonrpc": "2.0", "id": "srv-7", "method": "chat/answer", "params": {}}
        )
        await conn._dispatch({"jsonrpc": "2.0", "id": 12, "method": "extension/register"})
        await conn._dispatch({"jsonrpc": "2.0", "method": "session/update", "params": {"a": 1}})
        assert socket.sent == [
            {"jsonrpc": "2.0", "id": "srv-7", "result": None},
            {"jsonrpc": "2.0", "id": 12, "result": None},
        ]
        assert [method for method, _ in routed] == [
            "chat/answer",
            "extension/register",
            "session/update",
        ]
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
    (message,) = LspDecoder().feed(encode_message({"method": "m", "params": {"t": "好"}}).encode())
    assert message == {"method": "m", "params": {"t": "好"}}


# --------------------------------------------------------------------------- §5.3 legacy chat


def test_refusal_is_read_from_either_spelling() -> None:
    assert refused({"success": False}) and refused({"isSuccess": False})
    assert not refused({"success": True}) and not refused({"requestId": ""})
    assert not refused(None) and not refused({"success": None})


async def test_an_is_success_false_acceptance_fails_the_ask() -> None:
    conn = FakeConnection({"chat/ask": {"isSuccess": False, "errorMessage": "user not login"}})
    queue = PushQueue(cast(RpcConnection, conn))
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


# --------------------------------------------------------------------------- §5.4 ACP updates


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
    spec = WorkerSpec(
        name="a",
        socket_path="/nowhere",
        binary="x",
        work_dir="/nowhere",
        dedicated_domain_url="https://lingma.example.com",
    )
    manager = LoginManager(spec, lambda: cast(Any, FakeClient(result)), lambda: None)
    with caplog.at_level(logging.INFO, logger="worker.login"):
        await manager.apply_endpoint()
    messages = [record.getMessage() for record in caplog.records]
    assert any("refused the dedicated endpoint: bad domain" in m for m in messages) is refusal
    assert ("dedicated endpoint applied" in messages) is not refusal
