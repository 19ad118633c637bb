"""The cloud API stand-in (`lingma-emulator cloud`) against the gateway's real cloud client.

Covers §14.15 (paths, signature checks, envelope, fragments, faults, Encode=1, upload, record)
and, with one stand-in per knob, the parser tolerance of §14.16 item 9 and item 12.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import msgspec
import pytest

from emulator.cloud_wire import encode_body
from protocol.chat import ChatTurn, ImageInput, ToolSpec
from tests.component.emulator_support import CloudEmulator, cloud_emulator, write_script
from worker.cloud import sse
from worker.cloud.body import BodyInput, build_body
from worker.cloud.calls import ToolCallAssembler
from worker.cloud.client import CHAT_PATH, CHAT_QUERY, MODELS_PATH, CloudClient
from worker.cloud.credential import Credential, load_from_work_dir
from worker.cloud.errors import CloudFailure, FailureKind
from worker.cloud.signing import signed_headers

pytestmark = pytest.mark.component

WEATHER = {"match": "weather", "tool_call": {"name": "get_weather", "arguments": {"city": "Paris"}}}


@pytest.fixture(scope="module")
def cloud() -> Iterator[CloudEmulator]:
    with cloud_emulator() as running:
        yield running


@pytest.fixture
async def client() -> AsyncIterator[CloudClient]:
    cloud_client = CloudClient(timeout_s=5.0)
    try:
        yield cloud_client
    finally:
        await cloud_client.close()


def credential(cloud: CloudEmulator) -> Credential:
    return load_from_work_dir(cloud.work_dir)


def chat_body(text: str, **fields: Any) -> bytes:
    return build_body(
        BodyInput(turns=[ChatTurn(role="user", text=text)], model_key="kmodel", **fields)
    )[1]


async def events_of(client: CloudClient, cloud: CloudEmulator, body: bytes) -> list[sse.CloudEvent]:
    out: list[sse.CloudEvent] = []
    async with client.chat(cloud.base_url, credential(cloud), body) as events:
        async for event in events:
            out.append(event)
    return out


def text_of(events: list[sse.CloudEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, sse.TextPiece))


async def test_paths_ping_models_and_unknown(cloud: CloudEmulator, client: CloudClient) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(cloud.base_url + "/algo/api/v1/ping") as response:
            assert response.status == 200 and await response.text() == "pong"
        async with http.get(cloud.base_url + "/algo/api/v2/nothing") as response:
            assert response.status == 404
        async with http.get(cloud.base_url + MODELS_PATH) as response:  # no COSY auth at all
            assert response.status == 403 and await response.text() == "Request discarded"
    models = await client.list_models(cloud.base_url, credential(cloud))
    assert {"chat", "inline", "assistant", "developer", "quest"} <= set(models)
    item = models["chat"][0]
    assert {"key", "display_name", "model", "is_vl", "is_reasoning", "enable"} <= set(item)


async def test_plain_chat_and_the_record(cloud: CloudEmulator, client: CloudClient) -> None:
    write_script(cloud.script_path, [])
    events = await events_of(client, cloud, chat_body("hello stand-in"))
    texts = [e for e in events if isinstance(e, sse.TextPiece)]
    assert len(texts) >= 2 and "hello stand-in" in text_of(events)
    assert sse.FinishSeen("stop") in events and events[-1] == sse.DoneSeen()
    assert any(isinstance(e, sse.UsageSeen) and e.completion_tokens for e in events)
    last = cloud.records()[-1]
    assert last["event"] == "cloud" and last["auth"]["status"] == 200
    assert last["body"]["messages"][0]["content"] == "hello stand-in"
    assert not {"Authorization", "Cosy-Key"} & set(last["headers"])
    assert last["headers"]["Cosy-Clienttype"] == "2"


async def test_tool_call_arrives_in_fragments(cloud: CloudEmulator, client: CloudClient) -> None:
    write_script(cloud.script_path, [WEATHER])
    events = await events_of(
        client, cloud, chat_body("weather?", tools=[ToolSpec(name="get_weather")])
    )
    fragments = [e for e in events if isinstance(e, sse.ToolFragment)]
    assert len([f for f in fragments if f.arguments]) >= 2
    assembler = ToolCallAssembler()
    for fragment in fragments:
        assembler.add(fragment)
    (call,) = assembler.calls()
    assert call.name == "get_weather" and msgspec.json.decode(call.arguments_json) == {
        "city": "Paris"
    }
    assert sse.FinishSeen("tool_calls") in events


async def test_tampered_requests_are_refused(cloud: CloudEmulator) -> None:
    cred, body = credential(cloud), chat_body("hi")
    stranger = Credential("wrong", cred.encrypt_user_info, cred.user_id, cred.machine_id)
    url = cloud.base_url + CHAT_PATH + CHAT_QUERY
    cases = [
        (signed_headers(cred, path=CHAT_PATH, body=body), body + b" "),  # changed after signing
        ({**signed_headers(cred, path=CHAT_PATH, body=body), "Cosy-User": ""}, body),
        ({**signed_headers(cred, path=CHAT_PATH, body=body), "Cosy-Date": ""}, body),
        (signed_headers(stranger, path=CHAT_PATH, body=body), body),
    ]  # fmt: skip
    async with aiohttp.ClientSession() as http:
        for headers, sent in cases:
            async with http.post(url, data=sent, headers=headers) as response:
                assert response.status == 403
                assert await response.json() == {"code": "101", "message": "Signature invalid"}


async def test_encode_1_bodies_are_decoded_and_recorded(cloud: CloudEmulator) -> None:
    write_script(cloud.script_path, [])
    cred, body = credential(cloud), chat_body("obfuscated hello")
    encoded = encode_body(body).encode()
    headers = signed_headers(
        cred, path=CHAT_PATH, body=encoded
    )  # the signature covers the text sent
    async with aiohttp.ClientSession() as http:
        url = cloud.base_url + CHAT_PATH + CHAT_QUERY + "&Encode=1"
        async with http.post(url, data=encoded, headers=headers) as response:
            assert response.status == 200
            assert "obfuscated hello" in (await response.read()).decode()
    assert cloud.records()[-1]["body"] == msgspec.json.decode(body)


async def test_bad_bodies_and_uploads(cloud: CloudEmulator, client: CloudClient) -> None:
    cred = credential(cloud)
    async with aiohttp.ClientSession() as http:
        for body in (b"not json", b'{"messages": []}'):
            headers = signed_headers(cred, path=CHAT_PATH, body=body)
            async with http.post(
                cloud.base_url + CHAT_PATH, data=body, headers=headers
            ) as response:
                assert response.status == 400
    image = ImageInput(media_type="image/png", data_b64="iVBORw0KGgo=")
    url = await client.upload_image(cloud.base_url, cred, image)
    assert url.startswith("https://cdn.lingma-emulator.invalid/")
    uploads = [r for r in cloud.records() if "image" in r["path"]]
    assert uploads[-1]["path"] == "/algo/api/v2/image/upload" and uploads[-1]["status"] == 200


@pytest.mark.parametrize(
    ("fault", "kind"),
    [
        ("rate_limit_http", FailureKind.RATE_LIMITED),
        ("server_error", FailureKind.SERVER),
        ("expired", FailureKind.AUTH),
    ],
)
async def test_http_faults(
    cloud: CloudEmulator, client: CloudClient, fault: str, kind: FailureKind
) -> None:
    write_script(cloud.script_path, [{"cloud_fault": fault, "retry_after_s": 7}])
    with pytest.raises(CloudFailure) as caught:
        await events_of(client, cloud, chat_body("x"))
    assert caught.value.kind is kind
    if kind is FailureKind.RATE_LIMITED:
        assert caught.value.retry_after == 7.0
    if kind is FailureKind.AUTH:
        assert caught.value.code == "105"


async def test_stream_faults(cloud: CloudEmulator, client: CloudClient) -> None:
    write_script(cloud.script_path, [{"cloud_fault": "rate_limit_inband"}])
    assert [type(e) for e in await events_of(client, cloud, chat_body("x"))] == [sse.InBandError]
    write_script(cloud.script_path, [{"cloud_fault": "truncate", "reply": "a b c d e f g h"}])
    truncated = await events_of(client, cloud, chat_body("x"))
    assert text_of(truncated) and not any(
        isinstance(e, sse.FinishSeen | sse.DoneSeen) for e in truncated
    )
    write_script(cloud.script_path, [{"cloud_fault": "cut", "reply": "a b c d e f g h"}])
    with pytest.raises(CloudFailure) as caught:
        await events_of(client, cloud, chat_body("x"))
    assert caught.value.kind is FailureKind.CUT
    write_script(cloud.script_path, [{"cloud_fault": "error_after_finish", "reply": "whole"}])
    late = await events_of(client, cloud, chat_body("x"))
    assert text_of(late) == "whole" and isinstance(late[-1], sse.InBandError)
    write_script(cloud.script_path, [{"cloud_fault": "empty"}])
    empty = await events_of(client, cloud, chat_body("x"))
    assert not text_of(empty) and sse.DoneSeen() in empty


VARIANTS: list[dict[str, str]] = [
    {"LINGMA_EMULATOR_CLOUD_DATA_SPACE": "1", "LINGMA_EMULATOR_CLOUD_DONE": "envelope"},
    {
        "LINGMA_EMULATOR_CLOUD_STATS": "1",
        "LINGMA_EMULATOR_CLOUD_NO_USAGE": "1",
        "LINGMA_EMULATOR_CLOUD_UPLOAD": "bare",
    },
    {"LINGMA_EMULATOR_CLOUD_BARE_CHUNKS": "1", "LINGMA_EMULATOR_CLOUD_CHUNK_CHARS": "3"},
    {"LINGMA_EMULATOR_CLOUD_LATE_TOOL_ID": "1", "LINGMA_EMULATOR_REPLY_TOKENS": "200000"},
]


@pytest.mark.parametrize("knobs", VARIANTS, ids=lambda k: "+".join(n.split("_")[-1] for n in k))
async def test_every_wire_variant_decodes(knobs: dict[str, str], client: CloudClient) -> None:
    with cloud_emulator("cldv-", knobs) as cloud:
        events = await events_of(client, cloud, chat_body("variant check"))
        assert "variant check" in text_of(events) and events[-1] == sse.DoneSeen()
        assert any(isinstance(e, sse.UsageSeen) for e in events)  # the last chunk or TAP's line
        write_script(cloud.script_path, [WEATHER])
        tool_events = await events_of(client, cloud, chat_body("weather"))
        assembler = ToolCallAssembler()
        for event in tool_events:
            if isinstance(event, sse.ToolFragment):
                assembler.add(event)
        (call,) = assembler.calls()
        assert call.call_id.startswith("call_") and call.name == "get_weather"
        image = ImageInput(url="https://example.com/cat.png")
        assert await client.upload_image(cloud.base_url, credential(cloud), image)
        bare = knobs.get("LINGMA_EMULATOR_CLOUD_UPLOAD") == "bare"  # /algo then 404s: no line
        expected = "/api/v2/image/upload" if bare else "/algo/api/v2/image/upload"
        assert [r["path"] for r in cloud.records() if "image" in r["path"]] == [expected]


async def test_expired_logins_in_band(client: CloudClient) -> None:
    """CLOUD_EXPIRED + CLOUD_AUTH_INBAND: HTTP 200 with one FORBIDDEN envelope (QoderCN form)."""
    knobs = {"LINGMA_EMULATOR_CLOUD_AUTH_INBAND": "1", "LINGMA_EMULATOR_CLOUD_EXPIRED": "1"}
    with cloud_emulator("clda-", knobs) as cloud:
        events = await events_of(client, cloud, chat_body("x"))
        assert events == [sse.InBandError(403, "105", "Login expired")]
        with pytest.raises(CloudFailure, match="105"):  # the model list has no stream: HTTP 403
            await client.list_models(cloud.base_url, credential(cloud))
