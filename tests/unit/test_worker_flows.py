"""Upstream event parsing and status mapping for both chat flows, and login helpers."""

from __future__ import annotations

import pytest

from protocol.vocabulary import ErrorCode
from worker.acp import acp_event, prompt_meta
from worker.endings import check_end, end_from, rpc_failure
from worker.legacy import LegacyFlow
from worker.login import is_logged_in, login_url_from
from worker.rpc import RpcError
from worker.upstream import Ask, ContextUsage, End, NativeTool, Text, Thought, UpstreamFailure

pytestmark = pytest.mark.unit

ASK = Ask(
    request_id="r1",
    session_id="s1",
    question="q",
    model_key="auto",
    mode="agent",
    is_reply=True,
    cwd="/w",
)


def test_acp_updates_become_events() -> None:
    def chunk(kind: str) -> dict[str, object]:
        return {"sessionUpdate": kind, "content": {"type": "text", "text": "t"}}

    assert acp_event(chunk("agent_message_chunk")) == Text("t")
    assert acp_event(chunk("agent_thought_chunk")) == Thought("t")
    tool = {
        "sessionUpdate": "tool_call",
        "toolCallId": "c1",
        "title": "Read file",
        "rawInput": {"path": "a.py"},
        "_meta": {"ai-coding/tool-name": "read_file"},
    }
    assert acp_event(tool) == NativeTool("c1", "read_file", '{"path": "a.py"}')
    usage = {
        "sessionUpdate": "notification",
        "type": "context_usage",
        "data": {"usedTokens": 5, "limitTokens": 9},
    }
    assert acp_event(usage) == ContextUsage(5, 9)
    finish = {
        "sessionUpdate": "notification",
        "type": "chat_finish",
        "data": {"reason": "success", "fullAnswer": ""},
    }
    assert acp_event(finish) == End(200, "success", "")
    assert acp_event({"sessionUpdate": "available_commands_update"}) is None
    assert acp_event("junk") is None


def test_finish_status_mapping() -> None:
    assert end_from({"statusCode": 429, "reason": "busy", "extra": {"retryAfter": 7}}) == End(
        429, "busy", "", 7.0
    )
    assert end_from({"reason": "error"}).status_code == 500
    check_end(End(200, "success"))
    expected = {
        429: ErrorCode.UPSTREAM_RATE_LIMITED,
        408: ErrorCode.UPSTREAM_TIMEOUT,
        500: ErrorCode.UPSTREAM_ERROR,
        401: ErrorCode.NOT_LOGGED_IN,
    }
    for status, code in expected.items():
        with pytest.raises(UpstreamFailure) as info:
            check_end(End(status, "why"))
        assert info.value.code is code and "why" in info.value.message


@pytest.mark.parametrize(
    ("data", "code"),
    [
        # §5.4: `{reason, fullAnswer}` only; the wording has to tell (§10, §14.10).
        ({"reason": "success", "fullAnswer": ""}, None),
        ({"reason": "end_turn"}, None),
        ({"reason": "some new word"}, None),  # unknown, not an error: the text decides
        ({"reason": "cancelled"}, ErrorCode.UPSTREAM_ERROR),
        ({"reason": "429 Too Many Requests: slow down"}, ErrorCode.UPSTREAM_RATE_LIMITED),
        (
            {"reason": 'TOO_MANY_REQUESTS {"code":"429","message":"later"}'},
            ErrorCode.UPSTREAM_RATE_LIMITED,
        ),
        ({"reason": '{"code":"110","message":"quota exceeded"}'}, ErrorCode.UPSTREAM_RATE_LIMITED),
        ({"reason": "error", "errorMessage": "额度已用完"}, ErrorCode.UPSTREAM_RATE_LIMITED),
        ({"reason": '{"code":"105","message":"Login expired"}'}, ErrorCode.NOT_LOGGED_IN),
        ({"reason": "error", "errorMessage": "user not login"}, ErrorCode.NOT_LOGGED_IN),
        ({"reason": "408 Request Timeout: too slow"}, ErrorCode.UPSTREAM_TIMEOUT),
        ({"reason": "500 Internal Server Error: boom"}, ErrorCode.UPSTREAM_ERROR),
        ({"reason": "failed"}, ErrorCode.UPSTREAM_ERROR),
        # statusCode, when present, still decides (legacy chat/finish has it, §5.3).
        ({"reason": "whatever", "statusCode": 200}, None),
        ({"reason": "quota exceeded", "statusCode": 403}, ErrorCode.UPSTREAM_RATE_LIMITED),
        ({"reason": "forbidden", "statusCode": 403}, ErrorCode.NOT_LOGGED_IN),
    ],
)
def test_finishes_without_a_status_code_are_read_from_their_words(
    data: dict[str, object], code: ErrorCode | None
) -> None:
    end = end_from(data)
    if code is None:
        check_end(end)
        return
    with pytest.raises(UpstreamFailure) as info:
        check_end(end)
    assert info.value.code is code


def test_error_notifications_turn_a_success_word_into_a_failure() -> None:
    end = end_from({"reason": "success"}, "rate limit reached")
    assert end.status_code == 429 and "rate limit reached" in end.reason


def test_acp_meta_is_what_public_clients_send() -> None:
    meta = prompt_meta(ASK)  # an agent-mode ask
    assert meta["ai-coding/request-id"] == "r1" and meta["ai-coding/model"] == "auto"
    assert meta["ai-coding/mode"] == "agent" and meta["ai-coding/enabled-mcp-servers"] == []
    assert isinstance(meta["ai-coding/shell-type"], str) and meta["ai-coding/shell-type"]
    plain = prompt_meta(Ask("r2", "s", "q", "auto", "chat", False, "/w"))
    assert "ai-coding/mode" not in plain  # never an invented value such as "chat"


def test_rpc_errors_are_classified() -> None:
    assert (
        rpc_failure(RpcError(-32001, "user not login, please login")).code
        is ErrorCode.NOT_LOGGED_IN
    )
    forgotten = rpc_failure(RpcError(-32602, "session not found: abc"))
    assert forgotten.code is ErrorCode.UPSTREAM_ERROR and forgotten.session_rejected
    assert not rpc_failure(RpcError(-32603, "boom")).session_rejected


def test_legacy_params_carry_model_session_and_mode() -> None:
    params = LegacyFlow().params(ASK)
    assert params["extra"]["modelConfig"]["key"] == "auto"
    assert (params["sessionId"], params["isReply"], params["mode"]) == ("s1", True, "agent")
    assert params["questionText"] == "q" and params["stream"] is True


def test_login_helpers() -> None:
    assert is_logged_in({"status": 2, "id": "1"}) and not is_logged_in({"status": 1, "id": ""})
    assert is_logged_in({"id": "5930"}) and not is_logged_in(None)
    assert login_url_from({"url": "https://devops.aliyun.com/lingma/login?x=1"}).endswith("x=1")
    assert login_url_from({"loginUrl": "http://127.0.0.1:1/l"}) == "http://127.0.0.1:1/l"
    assert login_url_from({"data": "go to https://a.b/c now"}) == "https://a.b/c"
    assert login_url_from({}) == ""
