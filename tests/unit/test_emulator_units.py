"""lingma-emulator pure logic: framing decoder, prompt parsing, script rules, cache/user format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from emulator.rpc_framing import FrameDecoder, frame
from emulator.scripts import (
    Action,
    ErrorSpec,
    ScriptBook,
    ScriptedErrorKind,
    default_reply,
    latest_user_turn,
)
from emulator.settings import SettingsError, knobs_from_env, parse_users
from emulator.user_cache import UserFileError, decrypt_user, encrypt_user, new_user
from front.tools import render_tool_call

pytestmark = pytest.mark.unit


def framed(message: dict[str, object]) -> bytes:
    return frame(json.dumps(message, ensure_ascii=False).encode()).encode()


def test_frame_counts_utf8_bytes() -> None:
    body = '{"q":"问题"}'.encode()
    assert frame(body) == 'Content-Length: 14\r\n\r\n{"q":"问题"}'
    assert len(body) == 14


def test_decoder_reassembles_any_split() -> None:
    stream = framed({"id": 1, "q": "héllo 世界"}) + framed({"id": 2})
    for cut in range(1, len(stream)):
        decoder = FrameDecoder()
        bodies = decoder.feed(stream[:cut]).bodies + decoder.feed(stream[cut:]).bodies
        assert [json.loads(b)["id"] for b in bodies] == [1, 2]


def test_decoder_rejects_unframed_json_and_recovers() -> None:
    decoder = FrameDecoder()
    out = decoder.feed(b'{"jsonrpc":"2.0","id":7}' + framed({"id": 8}))
    assert out.rejected == 1 and [json.loads(b)["id"] for b in out.bodies] == [8]
    out = decoder.feed(b"Content-Length: x\r\n\r\n" + framed({"id": 9}))
    assert out.rejected == 1 and [json.loads(b)["id"] for b in out.bodies] == [9]


def test_decoder_accepts_extra_headers() -> None:
    body = b'{"id":3}'
    data = b"Content-Type: application/vscode-jsonrpc\r\nContent-Length: %d\r\n\r\n%s" % (
        len(body),
        body,
    )
    assert FrameDecoder().feed(data).bodies == [body]


@pytest.mark.parametrize(
    ("prompt", "latest"),
    [
        ("just text", "just text"),
        ("[system] s\n[user] one\n[assistant] a\n[user] two\nlines", "two\nlines"),
        ("[User] hi\n[assistant]", "hi"),
        ("[user]\nTool result for call_1: 42\n", "Tool result for call_1: 42"),
        ("x [user] inline is not a turn", "x [user] inline is not a turn"),
    ],
)
def test_latest_user_turn(prompt: str, latest: str) -> None:
    assert latest_user_turn(prompt) == latest


def test_default_reply_pads_to_reply_tokens() -> None:
    assert default_reply("kmodel", "hi", 0) == "[lingma-emulator kmodel] You said: hi"
    assert len(default_reply("kmodel", "hi", 50).split()) == 50


def test_script_rules(tmp_path: Path) -> None:
    script = tmp_path / "s.json"
    rules = [
        {"match": "tool", "tool_call": {"name": "ls", "arguments": {"path": "/"}}},
        {"match": "fail", "model": "^kmodel$", "error": {"status": 429, "message": "slow down"}},
        {"match": "hang", "action": "hang", "times": 1},
    ]
    script.write_text(json.dumps({"rules": rules}))
    book = ScriptBook(script)
    assert book.answer("[user] use tool", "auto").text == render_tool_call("ls", {"path": "/"})
    failed = book.answer("fail", "kmodel")
    assert failed.error is not None and failed.error.status == 429 and failed.text == ""
    assert "You said: fail" in book.answer("fail", "auto").text  # model filter
    assert book.answer("hang", "auto").action is Action.HANG
    assert book.answer("hang", "auto").action is None  # times: 1
    assert book.answer("x", "m", reasoning=True).thinking  # reasoning models think by default
    script.write_text("{not json")
    assert book.answer("tool", "auto").rule is None  # a broken script falls back to defaults


def test_user_file_round_trip_and_wrong_key() -> None:
    machine_id = "0123456789abcdef-rest-of-uuid"
    user = new_user("alice")
    text = encrypt_user(user, machine_id)
    assert decrypt_user(text, machine_id) == user
    with pytest.raises(UserFileError):
        decrypt_user(text, "fedcba9876543210-other")


def test_settings_from_env() -> None:
    knobs = knobs_from_env({"LINGMA_EMULATOR_TOKENS_PER_S": "12.5", "LINGMA_EMULATOR_NO_ACP": "1"})
    assert knobs.tokens_per_s == 12.5 and knobs.no_acp and knobs.users == {"demo": "demo"}
    assert parse_users("a:b,c:d:e") == {"a": "b", "c": "d:e"}
    with pytest.raises(SettingsError):
        knobs_from_env({"LINGMA_EMULATOR_FRAME_MODE": "weird"})
    with pytest.raises(SettingsError):
        knobs_from_env({"LINGMA_EMULATOR_FIRST_TOKEN_MS": "-1"})


def test_error_kinds_are_worded_as_the_spec_shows() -> None:
    limited = ErrorSpec(kind=ScriptedErrorKind.RATE_LIMIT).worded()
    assert limited.status == 429 and limited.message.startswith('TOO_MANY_REQUESTS {"code":"429"')
    quota = ErrorSpec(kind=ScriptedErrorKind.QUOTA, message="月额度已用完").worded()
    assert (quota.status, quota.message) == (403, '{"code":"110","message":"月额度已用完"}')
    assert ErrorSpec(kind=ScriptedErrorKind.LOGIN).worded().message.endswith('"Login expired"}')
    plain = ErrorSpec(status=500, message="boom")
    assert plain.worded() is plain
