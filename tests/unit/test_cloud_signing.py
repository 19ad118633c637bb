"""Unit: the COSY signature and headers (§14.5) reproduce the worked example and the QD vector."""

from __future__ import annotations

import base64

import msgspec
import pytest

from worker.cloud.credential import Credential
from worker.cloud.signing import (
    auth_payload,
    machine_os,
    redacted,
    signature,
    signed_headers,
    signing_path,
)

pytestmark = pytest.mark.unit

P64 = (
    "eyJjb3N5VmVyc2lvbiI6IjIuMTEuMiIsImlkZVZlcnNpb24iOiIiLCJpbmZvIjoiUlZWSkxXVjRZVzF3YkdVPSIsInJl"
    "cXVlc3RJZCI6IjExMTExMTExLTIyMjItNDMzMy04NDQ0LTU1NTU1NTU1NTU1NSIsInZlcnNpb24iOiJ2MSJ9"
)
REQUEST_ID = "11111111-2222-4333-8444-555555555555"
CHAT = (
    "/algo/api/v2/service/pro/sse/agent_chat_generation"
    "?FetchKeys=llm_model_result&AgentId=agent_common"
)
EXAMPLE = Credential(
    cosy_key="S0VZLWV4YW1wbGU=",
    encrypt_user_info="RVVJLWV4YW1wbGU=",
    user_id="5930",
    machine_id="0c4f0a52-7a4e-4c3b-9a55-1234567890ab",
)


def test_worked_example() -> None:
    payload = auth_payload("RVVJLWV4YW1wbGU=", REQUEST_ID)
    assert base64.b64encode(payload).decode() == P64
    key, date = "S0VZLWV4YW1wbGU=", "1700000000"
    assert signature(P64, key, date, b"", "/algo/api/v2/model/list") == (
        "438f4fed9fa8f59b89e144b6ae265bcc"
    )
    body = b'{"messages":[{"role":"user","content":"hi"}]}'
    assert signature(P64, key, date, body, CHAT) == "3b39f5080f47302553e55b92ab8117ec"


def test_qd_vector() -> None:
    path = "/api/v2/service/pro/sse/agent_chat_generation"
    assert signature("COSYPAYLOAD64", "COSYKEY64", "1700000000", b"TESTBODY", path) == (
        "65b7dfc7c1a5e441a362c8314973dc96"
    )


@pytest.mark.parametrize(
    ("path", "signed"),
    [
        (CHAT, "/api/v2/service/pro/sse/agent_chat_generation"),
        ("/algo/api/v2/image/upload?request_id=ab", "/api/v2/image/upload"),
        ("/api/v2/image/upload?request_id=ab", "/api/v2/image/upload"),
        ("/algorithm/x", "/algorithm/x"),
    ],
)
def test_signing_path(path: str, signed: str) -> None:
    assert signing_path(path) == signed


def test_headers_carry_one_date_and_the_signed_payload() -> None:
    body = b'{"messages":[{"role":"user","content":"hi"}]}'
    headers = signed_headers(EXAMPLE, path=CHAT, body=body, date=1700000000, request_id=REQUEST_ID)
    assert headers["Authorization"] == f"Bearer COSY.{P64}.3b39f5080f47302553e55b92ab8117ec"
    assert headers["Cosy-Date"] == "1700000000" and headers["Cosy-Key"] == EXAMPLE.cosy_key
    assert headers["Cosy-User"] == "5930" and headers["Cosy-Machineid"] == EXAMPLE.machine_id
    assert headers["Cosy-Version"] == msgspec.json.decode(base64.b64decode(P64))["cosyVersion"]
    assert headers["Cosy-Data-Policy"] == "AGREE" and headers["X-Request-Id"] == REQUEST_ID
    assert headers["Accept"] == "text/event-stream" and headers["Login-Version"] == "v2"
    assert headers["Cosy-Machineos"] == machine_os() and "_" in machine_os()


def test_fresh_request_ids_and_redaction() -> None:
    first = signed_headers(EXAMPLE, path=CHAT, body=b"")
    second = signed_headers(EXAMPLE, path=CHAT, body=b"")
    assert first["X-Request-Id"] != second["X-Request-Id"]
    shown = redacted(first)
    assert EXAMPLE.cosy_key not in str(shown) and EXAMPLE.user_id not in str(shown)
    assert shown["Cosy-Date"] == first["Cosy-Date"]
