"""Long answers are not cut by a total deadline (issue 16 item 4).

A slow emulator stream (a pause between every token) runs longer than small total caps. A
stream runs until it finishes when `stream_timeout_s` is 0 (the default), whatever
`request_timeout_s` (the non-streamed cap) says; with `stream_timeout_s` set it is cut, with the
deadline error in-band after its first bytes. The worker applies the same caps to requests that
name no deadline, to the runtime and the cloud backend alike.
"""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from protocol.channel import MuxClient
from protocol.chat import ChatTurn
from protocol.vocabulary import ErrorCode
from tests.component.api_support import post, running_gateway
from tests.component.worker_support import chat, logged_in_worker, make_spec, ready_client
from tests.harness import DirectGateway, front_spec, start_front
from tests.helpers import wait_until

pytestmark = pytest.mark.component

SLOW = {"match": "long", "reply": "one two three four five six seven eight", "chunk_delay_ms": 250}
SLOW_S = 7 * 0.25  # seven pauses between eight tokens
CAP_S = 1.0
CLOUD = {"LINGMA_EMULATOR_CLOUD": "1"}
TURNS = [ChatTurn(role="user", text="long one")]  # what a cloud worker reads (runtime: ignored)


@pytest.fixture(scope="module")
def gateway() -> Iterator[DirectGateway]:
    with running_gateway("lgw-ls-") as gw:
        yield gw


def front_with(gateway: DirectGateway, name: str, **caps: float) -> str:
    """Another front over the same worker, with its own caps; its base URL once it is READY."""
    root = gateway.root / name
    root.mkdir(exist_ok=True)
    spec = front_spec(root, gateway.workers, **caps)
    start_front(gateway.children, root, spec)
    base = f"http://127.0.0.1:{spec.port}"

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"{base}/healthz", timeout=2) as response:
                return b'"pool_ready":1' in response.read()
        except OSError:
            return False

    wait_until(ready, 20, f"front {name}")
    return base


async def stream(base: str, text: str) -> tuple[int, list[tuple[str, Any]], float]:
    body = {"model": "auto", "stream": True, "messages": [{"role": "user", "content": text}]}
    started = time.monotonic()
    async with aiohttp.ClientSession(base_url=base) as http:
        status, _, events = await post(http, "chat", body)
    return status, events, time.monotonic() - started


def streamed_text(events: list[tuple[str, Any]]) -> str:
    return "".join(
        data["choices"][0]["delta"].get("content") or ""
        for _, data in events
        if isinstance(data, dict) and data.get("choices")
    )


async def test_a_stream_outlives_the_old_total_cap(gateway: DirectGateway) -> None:
    gateway.set_script([SLOW])
    base = front_with(gateway, "no-cap", request_timeout_s=CAP_S, stream_timeout_s=0.0)
    status, events, took = await stream(base, "long answer please")
    assert status == 200 and took > SLOW_S > CAP_S
    assert streamed_text(events) == SLOW["reply"] and events[-1][1] == "[DONE]"


async def test_a_stream_cap_when_set_cuts_it_in_band(gateway: DirectGateway) -> None:
    gateway.set_script([SLOW])
    base = front_with(gateway, "capped", stream_timeout_s=CAP_S)
    status, events, took = await stream(base, "long answer please")
    assert status == 200 and CAP_S <= took < SLOW_S  # headers went out with the first token
    errors = [data["error"] for _, data in events if isinstance(data, dict) and "error" in data]
    assert errors and errors[0]["code"] == "deadline_exceeded", events
    assert streamed_text(events) != SLOW["reply"]


@pytest.fixture(scope="module", params=["runtime", "cloud"])
def capped_worker(request: pytest.FixtureRequest) -> Iterator[Any]:
    """A worker whose own caps apply (requests that name no deadline): streams 1 s, else none."""
    cloud = request.param == "cloud"

    def spec_in(root: Path) -> Any:
        extra: dict[str, Any] = {"backend": "cloud", "env": CLOUD} if cloud else {}
        return make_spec(root, stream_timeout_s=CAP_S, request_timeout_s=0.0, **extra)

    with logged_in_worker(spec_in) as process:
        yield process


async def test_the_workers_caps_for_requests_without_a_deadline(capped_worker: Any) -> None:
    async with ready_client(capped_worker) as mux:
        capped_worker.set_script([SLOW])
        whole = await chat(mux, "long one", stream=False, turns=TURNS)
        assert whole.text == SLOW["reply"]  # request_timeout_s = 0: no cap
        cut = await _timed(mux)
        assert cut.failure.code is ErrorCode.DEADLINE_EXCEEDED


async def _timed(mux: MuxClient) -> Any:
    started = time.monotonic()
    result = await chat(mux, "long one", stream=True, turns=TURNS)
    assert CAP_S <= time.monotonic() - started < SLOW_S
    return result
