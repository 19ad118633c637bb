"""What users of the reference gateway rely on, through a real front and worker: one token count
per prompt (count_tokens = message_start = final usage), /v1/models' ids, /internal/stats keys."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from tests.component.api_support import (
    AUTH,
    client_session,
    messages_body,
    post,
    running_gateway,
)
from tests.harness import ADMIN_TOKEN, DirectGateway

pytestmark = pytest.mark.component

ALIASES = {"claude-*": "auto", "gpt-4?": "auto", "house-model": "auto"}
WEATHER = {
    "name": "get_weather",
    "description": "天气 for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


@pytest.fixture(scope="module")
def gateway() -> Iterator[DirectGateway]:
    aliases = {"model_aliases": ALIASES}
    front_aliases = {"o[13]*": "auto", "team-model": "auto"}
    with running_gateway(
        "lgw-um-", workers=1, worker_overrides=aliases, model_aliases=front_aliases
    ) as gateway:
        yield gateway


@pytest.fixture
async def http(gateway: DirectGateway) -> AsyncIterator[aiohttp.ClientSession]:
    async with client_session(gateway) as session:
        yield session


@pytest.mark.parametrize("tools", [[], [WEATHER]], ids=["plain", "with-tools"])
async def test_count_tokens_equals_the_usage_of_the_reply(
    http: aiohttp.ClientSession, tools: list[dict[str, object]]
) -> None:
    body = messages_body("请用中文简单介绍一下上海 and keep it short", system="你是一个助手。")
    if tools:
        body["tools"] = tools
    status, counted, _ = await post(http, "/v1/messages/count_tokens", body)
    assert status == 200
    expected = counted["input_tokens"]
    status, reply, _ = await post(http, "messages", body)
    assert status == 200 and reply["usage"]["input_tokens"] == expected
    status, _, events = await post(http, "messages", {**body, "stream": True})
    assert status == 200
    usages = {name: data for name, data in events if name in ("message_start", "message_delta")}
    assert usages["message_start"]["message"]["usage"]["input_tokens"] == expected
    assert usages["message_delta"]["usage"]["input_tokens"] == expected


async def test_count_tokens_counts_cjk_characters_as_tokens(http: aiohttp.ClientSession) -> None:
    latin = (await post(http, "/v1/messages/count_tokens", messages_body("abcd" * 8)))[1]
    cjk = (await post(http, "/v1/messages/count_tokens", messages_body("上海" * 8)))[1]
    assert (latin["input_tokens"], cjk["input_tokens"]) == (8, 16)


async def test_models_lists_real_ids_and_plain_aliases_only(http: aiohttp.ClientSession) -> None:
    async with http.get("/v1/models", headers=AUTH) as response:
        assert response.status == 200
        ids = [entry["id"] for entry in (await response.json())["data"]]
    assert "auto" in ids and {"house-model", "team-model"} <= set(ids)
    assert not [model_id for model_id in ids if set(model_id) & set("*?[")], ids


async def test_internal_stats_keeps_the_reference_keys(http: aiohttp.ClientSession) -> None:
    assert (await post(http, "messages", messages_body("hello stats")))[0] == 200
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with http.get("/internal/stats", headers=admin) as response:
        assert response.status == 200
        stats = await response.json()
    assert {"ok", "stats", "concurrency", "pool", "session_cache", "front"} <= set(stats)
    [worker] = stats["pool"]
    assert stats["stats"]["requests_total"] == worker["stats"]["requests_total"] >= 1
    assert stats["stats"]["prompt_tokens_total"] == worker["stats"]["prompt_tokens_total"] > 0
    cache = stats["session_cache"]
    assert (cache["entries"], cache["hits"], cache["misses"]) == (
        worker["stats"]["sessions"],
        worker["stats"]["session_hits"],
        worker["stats"]["session_misses"],
    )
    assert 0.0 <= cache["hit_rate"] <= 1.0
