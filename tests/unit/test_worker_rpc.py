"""Worker RPC layer: LSP framing across WebSocket frames, discovery files, push replies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.rpc import (
    LspDecoder,
    LspFramingError,
    encode_message,
    machine_token_headers,
    push_reply,
    read_discovery,
    remove_discovery,
)

pytestmark = pytest.mark.unit


def test_content_length_counts_utf8_bytes_not_characters() -> None:
    text = encode_message({"jsonrpc": "2.0", "method": "chat/answer", "params": {"text": "你好"}})
    header, body = text.split("\r\n\r\n", 1)
    assert header == f"Content-Length: {len(body.encode())}"
    assert len(body.encode()) > len(body)


def test_several_messages_in_one_frame_and_one_split_across_frames() -> None:
    first = encode_message({"id": 1, "result": "a"})
    second = encode_message({"id": 2, "result": "中文"})
    data = (first + second).encode()
    decoder = LspDecoder()
    assert decoder.feed(data[:5]) == []
    cut = len(first.encode()) + 7
    assert decoder.feed(data[5:cut]) == [{"id": 1, "result": "a"}]
    assert decoder.feed(data[cut:]) == [{"id": 2, "result": "中文"}]


@given(st.lists(st.text(max_size=30), min_size=1, max_size=5), st.data())
def test_any_split_of_the_byte_stream_decodes_the_same(
    texts: list[str], data: st.DataObject
) -> None:
    messages = [{"id": i, "result": t} for i, t in enumerate(texts)]
    stream = "".join(encode_message(m) for m in messages).encode()
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    decoder = LspDecoder()
    decoded = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        decoded += decoder.feed(stream[start:end])
    assert decoded == messages


def test_extra_headers_are_allowed_and_bad_lengths_rejected() -> None:
    body = json.dumps({"id": 3, "result": None}).encode()
    framed = b"Content-Type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
    assert LspDecoder().feed(framed) == [{"id": 3, "result": None}]
    with pytest.raises(LspFramingError):
        LspDecoder().feed(b"Content-Length: x\r\n\r\n{}")
    with pytest.raises(LspFramingError):
        LspDecoder().feed(b"X-Other: 1\r\n\r\n{}")


def test_bare_json_frames_are_tolerated() -> None:
    assert LspDecoder().feed(b'{"id": 9, "result": 1}') == [{"id": 9, "result": 1}]


def test_discovery_prefers_info_json_then_legacy_info(tmp_path: Path) -> None:
    assert read_discovery(tmp_path) is None
    (tmp_path / ".info").write_text("36510\n4242\n\\\\.\\pipe\\lingma-bf0f32\n")
    legacy = read_discovery(tmp_path)
    assert legacy is not None and (legacy.port, legacy.pid, legacy.source) == (36510, 4242, ".info")
    info = {"websocketPort": 37010, "pid": 14060, "ipcServerPath": "", "isDev": False}
    (tmp_path / ".info.json").write_text(json.dumps(info))
    current = read_discovery(tmp_path)
    assert current is not None and (current.port, current.pid) == (37010, 14060)
    remove_discovery(tmp_path)
    assert read_discovery(tmp_path) is None


def test_unreadable_discovery_files_mean_no_endpoint(tmp_path: Path) -> None:
    (tmp_path / ".info.json").write_text("{not json")
    (tmp_path / ".info").write_text("port\n")
    assert read_discovery(tmp_path) is None


def test_machine_token_header_only_when_the_token_is_set(tmp_path: Path) -> None:
    (tmp_path / "cache").mkdir()
    token_file = tmp_path / "cache" / "machine_token.json"
    token_file.write_text('{"token": "", "type": 0}')
    assert machine_token_headers(tmp_path) == {}
    token_file.write_text('{"token": "abc", "type": 0}')
    assert machine_token_headers(tmp_path) == {"Cosy-MachineToken": "abc"}


def test_server_requests_that_wait_for_a_verdict_are_declined() -> None:
    invoke = push_reply("tool/invoke", {"toolCallId": "t1", "name": "read_file"})
    assert invoke["success"] is False and invoke["toolCallId"] == "t1"
    assert push_reply("session/request_permission", {"requestId": "r"})["successful"] is False
    assert push_reply("chat/answer", {"text": "x"}) is None
