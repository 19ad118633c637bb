"""Worker RPC layer: LSP framing, discovery files, push replies and routing, the work-dir lock."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.discovery import machine_token_headers, read_discovery, remove_discovery
from worker.lsp import LspDecoder, LspFramingError, encode_message
from worker.routes import CLOSED_PUSH, PushRouter
from worker.rpc import initialize_params, push_reply
from worker.workdir_lock import WorkDirBusy, WorkDirLock

pytestmark = pytest.mark.unit


def test_content_length_counts_utf8_bytes_not_characters() -> None:
    message = {"jsonrpc": "2.0", "method": "chat/answer", "params": {"text": "你好"}}
    payload = encode_message(message)
    header, body = payload.decode().split("\r\n\r\n", 1)
    assert header == f"Content-Length: {len(body.encode())}"
    assert len(body.encode()) > len(body)


def test_several_messages_in_one_frame_and_one_split_across_frames() -> None:
    first = encode_message({"id": 1, "result": "a"})
    second = encode_message({"id": 2, "result": "中文"})
    data = first + second
    decoder = LspDecoder()
    assert decoder.feed(data[:5]) == []
    cut = len(first) + 7
    assert decoder.feed(data[5:cut]) == [{"id": 1, "result": "a"}]
    assert decoder.feed(data[cut:]) == [{"id": 2, "result": "中文"}]


@given(st.lists(st.text(max_size=30), min_size=1, max_size=5), st.data())
def test_any_split_of_the_byte_stream_decodes_the_same(
    texts: list[str], data: st.DataObject
) -> None:
    messages = [{"id": i, "result": t} for i, t in enumerate(texts)]
    stream = b"".join(encode_message(m) for m in messages)
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


# --------------------------------------------------------------------------- §4 handshake


def test_initialize_sends_lsp_and_acp_fields_in_one_object(tmp_path: Path) -> None:
    params = initialize_params(tmp_path)
    assert params["rootUri"] == tmp_path.resolve().as_uri()
    assert params["workspaceFolders"][0]["name"] == tmp_path.name
    assert (params["protocolVersion"], params["clientCapabilities"]) == (1, {})
    assert isinstance(params["timestamp"], int) and params["capabilities"] == {}


# --------------------------------------------------------------------------- routing (§3.6, §5.4)


class Recorder:
    def __init__(self) -> None:
        self.got: list[tuple[str, dict[str, object]]] = []

    def put(self, method: str, params: dict[str, object]) -> None:
        self.got.append((method, params))


def test_pushes_go_to_the_request_they_name_and_nowhere_else() -> None:
    router = PushRouter()
    acp, legacy = Recorder(), Recorder()
    router.subscribe(acp, request_id="r-acp", session_id="s-acp")
    router.subscribe(legacy, request_id="r-legacy", session_id="s-legacy", unaddressed=True)
    chunk = {"sessionId": "s-acp", "_meta": {"ai-coding/request-id": "r-acp"}}
    router.deliver("session/update", chunk)
    router.deliver("chat/answer", {"requestId": "r-legacy", "text": "x"})
    router.deliver("session/title/update", {"sessionId": "s-acp"})  # by session
    router.deliver("snapshot/syncAll", {})  # names nobody: the legacy ask holding the line
    # Another client's request, or one already over, reaches nobody.
    router.deliver("session/update", {"sessionId": "s-acp", "_meta": {"ai-coding/request-id": "x"}})
    router.deliver("chat/answer", {"requestId": "gone", "text": "late"})
    assert [m for m, _ in acp.got] == ["session/update", "session/title/update"]
    assert [m for m, _ in legacy.got] == ["chat/answer", "snapshot/syncAll"]
    assert router.dropped == 2


def test_a_closed_subscription_hears_nothing_and_close_wakes_the_rest() -> None:
    router = PushRouter()
    first, second = Recorder(), Recorder()
    gone = router.subscribe(first, request_id="r1", session_id="s1", unaddressed=True)
    router.subscribe(second, request_id="r2", session_id="s2")
    gone.close()
    router.deliver("chat/answer", {"requestId": "r1", "text": "late"})
    router.deliver("snapshot/syncAll", {})
    router.close_all()
    assert first.got == [] and second.got == [(CLOSED_PUSH, {})]
    assert len(router) == 1


# ------------------------------------------------------------------ §7.5 one binary per dir


async def test_the_work_dir_lock_admits_one_holder_at_a_time(tmp_path: Path) -> None:
    first, second = WorkDirLock(tmp_path), WorkDirLock(tmp_path)
    assert first.try_acquire() and first.held
    assert not second.try_acquire()
    with pytest.raises(WorkDirBusy, match="still in use by pid"):
        await second.acquire(0.0)
    first.release()
    assert second.try_acquire()
    second.release()
