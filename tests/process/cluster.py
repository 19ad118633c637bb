"""Test-only: two lingma-gw hosts with their own emulated accounts, and client conversations
sent to them through a load balancer.

Host A has accounts a1 and a2, host B has b1; each has its own port, runtime and state dirs and
its own emulated binaries, which record every chat they receive (LINGMA_EMULATOR_RECORD), so a
test can see what reached "upstream" and in which session.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from protocol.vocabulary import ChildState
from tests.helpers import ChildProcesses, free_port, wait_until_async
from tests.process.gateway import API_KEY, EMULATOR, LINGMA_GW, SupervisedGateway, render_config

HOST_A = {"a1": EMULATOR, "a2": EMULATOR}
HOST_B = {"b1": EMULATOR}
AFFINITY = "x-lingma-affinity"
KEY_SHAPE = re.compile(r"[0-9a-f]{24}")  # the gateway's affinity key: a hash, no content
STREAM_CUE = "stream-probe"
LONG_REPLY = " ".join(f"word{i}" for i in range(75))  # 1.5 s at the emulators' 50 tokens/s


def start_host(
    children: ChildProcesses, root: Path, accounts: dict[str, str], emulator_env: dict[str, str]
) -> SupervisedGateway:
    """One host, as gateway.py's start_gateway plus a [lingma] env table for the binaries."""
    (root / "rt").mkdir(mode=0o700, parents=True, exist_ok=True)
    port = free_port()
    env_table = ", ".join(f"{key} = {json.dumps(value)}" for key, value in emulator_env.items())
    config = render_config(root, port, accounts) + f"[lingma]\nenv = {{ {env_table} }}\n"
    (root / "gw.toml").write_text(config)
    redirect = 'exec "$0" "$@" >> "$LGW_LOG" 2>&1'
    proc = children.start(
        ["/bin/sh", "-c", redirect, *LINGMA_GW, "serve", "--config", str(root / "gw.toml")],
        env={"LGW_LOG": str(root / "gw.log")},
    )
    return SupervisedGateway(root=root, port=port, proc=proc)


@dataclass
class Cluster:
    a: SupervisedGateway
    b: SupervisedGateway
    front_url: str = ""  # the balancer's base URL, once it runs

    @property
    def upstreams(self) -> list[str]:
        return [self.address(self.a), self.address(self.b)]

    def address(self, host: SupervisedGateway) -> str:
        return f"127.0.0.1:{host.port}"

    def record(self, host: SupervisedGateway) -> Path:
        return host.root / "upstream.jsonl"

    def host_of(self, account: str) -> SupervisedGateway:
        return self.a if account in HOST_A else self.b


def launch_hosts(children: ChildProcesses, root: Path) -> Cluster:
    script = root / "script.json"
    script.write_text(json.dumps({"rules": [{"match": STREAM_CUE, "reply": LONG_REPLY}]}))
    hosts = []
    for name, accounts in (("a", HOST_A), ("b", HOST_B)):
        host_root = root / name
        host_root.mkdir()
        env = {
            "LINGMA_EMULATOR_RECORD": str(host_root / "upstream.jsonl"),
            "LINGMA_EMULATOR_SCRIPT": str(script),
            "LINGMA_EMULATOR_TOKENS_PER_S": "50",
        }
        hosts.append(start_host(children, host_root, accounts, env))
    return Cluster(a=hosts[0], b=hosts[1])


async def bring_up(cluster: Cluster, http: aiohttp.ClientSession) -> None:
    """A logs in; B stays "up but no READY account", as while its accounts log in."""
    await asyncio.gather(
        cluster.a.login_all(list(HOST_A)),
        cluster.b.wait_states({"b1": ChildState.DEGRADED, "front-0": ChildState.READY}, 40),
    )
    await wait_health(cluster.a, http, "ready")


async def health(
    host: SupervisedGateway, http: aiohttp.ClientSession
) -> tuple[int, dict[str, Any]]:
    async with http.get(f"{host.base_url}/healthz") as response:
        payload: dict[str, Any] = await response.json()
        return response.status, payload


async def wait_health(host: SupervisedGateway, http: aiohttp.ClientSession, status: str) -> None:
    """The front's own view (it learns worker states from the supervisor a moment later)."""

    async def reached() -> bool:
        return bool((await health(host, http))[1]["status"] == status)

    await wait_until_async(reached, 15, f"{host.base_url}/healthz status {status}")


async def wait_not_serving(host: SupervisedGateway, http: aiohttp.ClientSession) -> None:
    async def refusing() -> bool:
        try:
            return (await health(host, http))[0] == 503  # draining
        except aiohttp.ClientConnectionError:
            return True  # already gone

    await wait_until_async(refusing, 10, f"{host.base_url} to start draining")


def records(path: Path) -> list[dict[str, Any]]:
    """LINGMA_EMULATOR_RECORD lines: what the emulated upstream received."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def auth_headers(affinity: str | None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    if affinity is not None:
        headers[AFFINITY] = affinity
    return headers


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: dict[str, Any]
    elapsed: float

    @property
    def text(self) -> str:
        return str(self.body["choices"][0]["message"]["content"])


async def chat(
    http: aiohttp.ClientSession,
    base_url: str,
    messages: list[dict[str, str]],
    affinity: str | None,
) -> Reply:
    body = {"model": "auto", "messages": messages}
    started = time.monotonic()
    async with http.post(
        f"{base_url}/v1/chat/completions", json=body, headers=auth_headers(affinity)
    ) as response:
        payload: dict[str, Any] = await response.json(content_type=None)
        return Reply(
            status=response.status,
            headers={k.lower(): v for k, v in response.headers.items()},
            body=payload,
            elapsed=time.monotonic() - started,
        )


@dataclass
class StreamTimes:
    status: int
    headers: dict[str, str]
    content_at: list[float]  # seconds since the request, one per SSE chunk carrying text
    done_at: float | None  # when `data: [DONE]` arrived
    text: str


async def chat_stream(
    http: aiohttp.ClientSession,
    base_url: str,
    messages: list[dict[str, str]],
    affinity: str,
    first_chunk: asyncio.Event | None = None,
) -> StreamTimes:
    body = {"model": "auto", "messages": messages, "stream": True}
    started = time.monotonic()
    times = StreamTimes(status=0, headers={}, content_at=[], done_at=None, text="")
    async with http.post(
        f"{base_url}/v1/chat/completions", json=body, headers=auth_headers(affinity)
    ) as response:
        times.status = response.status
        times.headers = {k.lower(): v for k, v in response.headers.items()}
        async for raw in response.content:
            line = raw.decode().strip()
            if line == "data: [DONE]":
                times.done_at = time.monotonic() - started
            elif line.startswith("data: "):
                for content in _chunk_texts(json.loads(line[6:])):
                    times.content_at.append(time.monotonic() - started)
                    times.text += content
                    if first_chunk is not None:
                        first_chunk.set()
    return times


def _chunk_texts(chunk: dict[str, Any]) -> Iterator[str]:
    for choice in chunk.get("choices", []):
        content = choice.get("delta", {}).get("content")
        if content:
            yield content


@dataclass
class Conversation:
    """One client conversation; `affinity` is the client's own id, or None to send no header."""

    name: str
    affinity: str | None
    messages: list[dict[str, str]] = field(default_factory=list)
    served_by: str = ""
    key: str = ""  # the x-lingma-affinity the gateway answered with

    def marker(self, turn: int) -> str:
        return f"{self.name}/t{turn}:"

    def ask(self, turn: int, extra: str = "") -> list[dict[str, str]]:
        self.messages.append({"role": "user", "content": f"{self.marker(turn)} go on {extra}"})
        return self.messages

    def answered(self, text: str) -> None:
        self.messages.append({"role": "assistant", "content": text})


async def send(
    cluster: Cluster, http: aiohttp.ClientSession, conv: Conversation, turn: int
) -> Reply:
    """One turn through the balancer; it must succeed, and the conversation keeps its account."""
    reply = await chat(http, cluster.front_url, conv.ask(turn), conv.affinity)
    assert reply.status == 200, (reply.status, reply.body, reply.headers)
    conv.answered(reply.text)
    key = reply.headers[AFFINITY]
    assert KEY_SHAPE.fullmatch(key), key
    assert not conv.affinity or conv.affinity not in key
    if turn == 1:
        conv.served_by, conv.key = reply.body["served_by"], key
    else:
        assert (reply.body["served_by"], key) == (conv.served_by, conv.key), conv.name
    return reply


def check_session_reused(cluster: Cluster, conv: Conversation, turns: int) -> None:
    """Upstream saw turn 1 once, then only each new user turn, all in one session."""
    host = cluster.host_of(conv.served_by)
    other = cluster.b if host is cluster.a else cluster.a
    seen = [r for r in records(cluster.record(host)) if conv.name + "/" in r["text"]]
    assert [conv.marker(n) in r["text"] for n, r in enumerate(seen, 1)] == [True] * turns, seen
    for turn, line in enumerate(seen[1:], 2):
        earlier = [conv.marker(n) for n in range(1, turn)]
        assert not any(m in line["text"] for m in earlier), line  # only the new turn was sent
    assert len({r["session_id"] for r in seen}) == 1, seen
    assert not [r for r in records(cluster.record(other)) if conv.name + "/" in r["text"]]


async def conversations_on_each_host(
    cluster: Cluster, http: aiohttp.ClientSession, turns: int
) -> tuple[Conversation, Conversation]:
    """Multi-turn conversations on both hosts; each keeps its host, account and session."""
    first: dict[str, Conversation] = {}
    for i in range(24):  # find one conversation that hashes to each host
        conv = Conversation(f"conv-{i}", affinity=f"conv-{i}")
        await send(cluster, http, conv, 1)
        first.setdefault(cluster.host_of(conv.served_by).base_url, conv)
        if len(first) == 2:
            break
    assert len(first) == 2, "24 conversations all hashed to one host"
    on_a, on_b = first[cluster.a.base_url], first[cluster.b.base_url]
    assert on_a.key != on_b.key
    for turn in range(2, turns + 1):
        for conv in (on_a, on_b):
            await send(cluster, http, conv, turn)
    for conv in (on_a, on_b):
        check_session_reused(cluster, conv, turns=turns)
    return on_a, on_b


async def stop_host_under_traffic(
    cluster: Cluster, http: aiohttp.ClientSession, on_b: Conversation
) -> list[Reply]:
    """A rolling restart of B: its stream in flight finishes, every new request succeeds on A,
    and B's conversation continues on A (which gets the whole history: a new session)."""
    assert on_b.affinity is not None and cluster.host_of(on_b.served_by) is cluster.b
    first_chunk = asyncio.Event()
    messages = on_b.ask(4, STREAM_CUE)
    in_flight = asyncio.create_task(
        chat_stream(http, cluster.front_url, messages, on_b.affinity, first_chunk)
    )
    async with asyncio.timeout(10):
        await first_chunk.wait()
    cluster.b.signal(signal.SIGTERM)
    await wait_not_serving(cluster.b, http)  # until then B may still take new conversations
    replies, after_exit = [], 0
    for i in range(80):
        conv = Conversation(f"moved-{i}", affinity=f"moved-{i}")
        replies.append(await send(cluster, http, conv, 1))
        assert conv.served_by in HOST_A, replies[-1].body
        after_exit += cluster.b.proc.poll() is not None
        if after_exit >= 4:
            break
    assert after_exit >= 4, "host B did not stop"
    assert cluster.b.proc.returncode == 0, cluster.b.log
    stream = await in_flight
    assert (stream.status, stream.text.strip()) == (200, LONG_REPLY), stream
    assert stream.done_at is not None  # B drained: its stream ended normally
    on_b.answered(stream.text)
    reply = await chat(http, cluster.front_url, on_b.ask(5), on_b.affinity)
    assert reply.status == 200 and reply.body["served_by"] in HOST_A, reply.body
    sent = [r for r in records(cluster.record(cluster.a)) if on_b.marker(5) in r["text"]]
    assert len(sent) == 1 and on_b.marker(1) in sent[0]["text"], sent
    return replies
