"""Unit: the cloud stand-in's own pieces — Encode=1 codec, signature verdicts, wire forms."""

from __future__ import annotations

import msgspec
import pytest

from emulator.cloud_auth import (
    DISCARDED,
    LOGIN_EXPIRED,
    SIGNATURE_INVALID,
    USER_INVALID,
    Login,
    Verifier,
)
from emulator.cloud_settings import CloudKnobs, DoneForm
from emulator.cloud_wire import ChatStreamWire, decode_body, encode_body
from worker.cloud.credential import Credential
from worker.cloud.signing import signed_headers

pytestmark = pytest.mark.unit

LOGIN = Login(key="KEY", info="INFO", uid="5930", machine_id="0c4f0a52-7a4e-4c3b")
PATH = "/algo/api/v2/service/pro/sse/agent_chat_generation"
BODY = b'{"messages":[{"role":"user","content":"hi"}]}'


def headers(**changes: str) -> dict[str, str]:
    credential = Credential(
        cosy_key=changes.pop("key", LOGIN.key),
        encrypt_user_info=changes.pop("info", LOGIN.info),
        user_id=LOGIN.uid,
        machine_id=LOGIN.machine_id,
    )
    signed = signed_headers(credential, path=PATH + "?FetchKeys=x", body=BODY, date=1700000000)
    return {**signed, **changes}


def verifier(*, date_window_s: int = 0, always_expired: bool = False) -> Verifier:
    return Verifier(
        lambda: [LOGIN],
        date_window_s=date_window_s,
        always_expired=always_expired,
        clock=lambda: 1700000030.0,
    )


def test_encode_vectors_and_round_trip() -> None:
    assert encode_body(b"hello") == "q$FruHPH"
    assert encode_body(b'{"a":"bcd"}') == "zBEw$Mn*#OjmYKiB"
    for raw in (b"", b"x", b"xy", BODY, bytes(range(256))):
        assert decode_body(encode_body(raw)) == raw
    with pytest.raises(ValueError, match="Encode=1"):
        decode_body("not encoded at all ~")


def test_accepts_a_correctly_signed_request() -> None:
    verdict = verifier().check(headers(), PATH, BODY)
    assert verdict.ok and verdict.uid == LOGIN.uid


@pytest.mark.parametrize(
    ("changes", "body", "expected"),
    [
        ({"Authorization": ""}, BODY, DISCARDED),
        ({"Authorization": "Bearer x"}, BODY, DISCARDED),
        ({}, BODY + b" ", SIGNATURE_INVALID),  # changed after signing
        ({"key": "OTHER"}, BODY, SIGNATURE_INVALID),  # a key no login has
        ({"Cosy-User": ""}, BODY, SIGNATURE_INVALID),
        ({"Cosy-Date": ""}, BODY, SIGNATURE_INVALID),
        ({"Cosy-User": "1"}, BODY, USER_INVALID),
        ({"Cosy-Machineid": "elsewhere"}, BODY, USER_INVALID),
        ({"info": "STALE"}, BODY, LOGIN_EXPIRED),
    ],
)
def test_rejections(changes: dict[str, str], body: bytes, expected: object) -> None:
    assert verifier().check(headers(**changes), PATH, body) == expected


def test_knob_variants() -> None:
    assert verifier(date_window_s=10).check(headers(), PATH, BODY) == SIGNATURE_INVALID
    assert verifier(date_window_s=60).check(headers(), PATH, BODY).ok
    assert verifier(always_expired=True).check(headers(), PATH, BODY) == LOGIN_EXPIRED
    assert msgspec.json.decode(SIGNATURE_INVALID.body) == {
        "code": "101",
        "message": "Signature invalid",
    }


def test_wire_forms() -> None:
    plain = ChatStreamWire(CloudKnobs(), "kmodel")
    line = plain.chunk({"content": "hi"})
    assert line.startswith(b"data:{") and line.endswith(b"\n\n")
    envelope = msgspec.json.decode(line[len(b"data:") :])
    assert envelope["headers"] == {"Content-Type": ["application/json"]}
    assert envelope["statusCodeValue"] == 200 and envelope["statusCode"] == "OK"
    assert msgspec.json.decode(envelope["body"])["choices"][0]["delta"] == {"content": "hi"}
    assert plain.done() == b"data:[DONE]\n\n"
    error = msgspec.json.decode(plain.error(429, "429", "slow down")[len(b"data:") :])
    assert error["statusCode"] == "TOO_MANY_REQUESTS" and error["statusCodeValue"] == 429
    varied = ChatStreamWire(
        CloudKnobs(data_space=True, done=DoneForm.ENVELOPE, bare_chunks=True), "m"
    )
    assert varied.chunk({})[:7] == b"data: {" and b'"body"' not in varied.chunk({})
    assert b'"body":"[DONE]"' in varied.done()
