"""The doctor's transcript: secrets and identities masked, the protocol's shape kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.transcript import MASK, Transcript, redact

pytestmark = pytest.mark.unit


def test_tokens_keys_and_user_names_are_masked_everywhere() -> None:
    status = {
        "jsonrpc": "2.0",
        "id": 7,
        "result": {
            "status": 2,
            "name": "someone@example.com",
            "id": "5930000000000000",
            "accountId": "5930000000000000",
            "token": "pt-XXXXXXXXXXXXXXXX",
            "refreshToken": "rt-YYYYYYYYYYYYYYYY",
            "whitelist": 3,
            "nested": [{"apiKey": "sk-live-123", "key": "cosy-key"}],
        },
    }
    masked = redact(status)
    result = masked["result"]
    assert masked["id"] == 7 and result["status"] == 2 and result["whitelist"] == 3
    for field in ("name", "id", "accountId", "token", "refreshToken"):
        assert result[field] == MASK, field
    assert result["nested"] == [{"apiKey": MASK, "key": MASK}]


def test_secrets_inside_free_text_are_masked_too() -> None:
    text = (
        "login as alice@example.org with pt-abcdef123456 uid 5930123456789012 via "
        "https://x/lingma/login?nonce=abc&port=1&machine_id=m-1"
    )
    masked = redact({"message": text})["message"]
    assert "alice" not in masked and "pt-abcdef" not in masked and "5930123456789012" not in masked
    assert "nonce=***" in masked and "machine_id=***" in masked and "port=1" in masked


def test_session_ids_and_request_ids_stay_readable() -> None:
    params = {"sessionId": "8e9f-uuid", "_meta": {"ai-coding/request-id": "ipc-1-ab"}, "id": 12}
    assert redact(params) == params


def test_the_transcript_file_is_private(tmp_path: Path) -> None:
    transcript = Transcript()
    transcript.record("conn1", "in", {"result": {"token": "pt-secret-value"}})
    transcript.note("user bob@example.com")
    path = tmp_path / "t.jsonl"
    transcript.write(path)
    text = path.read_text()
    assert "pt-secret" not in text and "bob@" not in text and text.count("\n") == 2
    assert path.stat().st_mode & 0o777 == 0o600
