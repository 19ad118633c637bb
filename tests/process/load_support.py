"""Test-only: a gateway config for fault tests and a bounded load of concurrent mixed clients.

`Load` runs N clients (OpenAI chat and Anthropic Messages, streamed and not) against a running
gateway until stopped; every request is bounded in time, and each result says how it ended:
OK, an HTTP error in the API's shape, a well-formed in-band error event, a stream cut without
a terminal event, a connection error, or a hang (the bound passed). Figures go to JSON + stdout.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from tests.helpers import ChildProcesses
from tests.process.gateway import API_KEY, LINGMA_GW, SupervisedGateway

ADMIN_TOKEN = "adm-SECRET-9f1c7e"
PASSWORD = "pw-SECRET-41d2b8"
CLIENTS = 64
REQUEST_BOUND_S = 25.0  # no request may take longer than this: past it, it counts as a hang


def render_config(
    root: Path,
    port: int,
    accounts: list[str],
    *,
    fronts: int = 2,
    lingma_env: dict[str, str] | None = None,
    account_env: dict[str, dict[str, str]] | None = None,
    request_timeout_s: float = 10.0,
    rpc_timeout_s: float = 3.0,
    queue_timeout_s: float = 5.0,
    max_in_flight: int = 256,
    max_concurrency: dict[str, int] | None = None,
    binary: str = "lingma-emulator",
    progress: str = "off",
    bundles: dict[str, str] | None = None,
    log_level: str = "info",
) -> str:
    """A config with per-account emulator scripts (`script-<name>.json` under root)."""
    pacing = {
        "LINGMA_EMULATOR_FIRST_TOKEN_MS": "20",
        "LINGMA_EMULATOR_TOKENS_PER_S": "80",
        "LINGMA_EMULATOR_REPLY_TOKENS": "30",
        **(lingma_env or {}),
    }
    lines = [
        "[server]",
        f'listen = "127.0.0.1:{port}"',
        f"fronts = {fronts}",
        f'runtime_dir = "{root / "rt"}"',
        f'state_dir = "{root / "st"}"',
        f'log_level = "{log_level}"',
        "grace_period_s = 6",
        "ping_interval_s = 0.25",
        "ping_timeout_s = 2",
        "stats_interval_s = 0.5",
        f'progress = "{progress}"',
        "access_log = true",
        "[auth]",
        f'api_keys = ["{API_KEY}"]',
        f'admin_token = "{ADMIN_TOKEN}"',
        "[limits]",
        f"request_timeout_s = {request_timeout_s}",
        f"queue_timeout_s = {queue_timeout_s}",
        f"max_in_flight = {max_in_flight}",
        "[lingma]",
        f"rpc_timeout_s = {rpc_timeout_s}",
        # A stalled answer fails within the request's deadline: no first token, or silence.
        f"first_token_timeout_s = {rpc_timeout_s}",
        f"silence_timeout_s = {rpc_timeout_s}",
        "cooldown_s = 2",
        "env = " + _inline(pacing),
        "[browser]",
        "auto_login = false",
    ]
    for name in accounts:
        env = {"LINGMA_EMULATOR_SCRIPT": str(script_path(root, name))}
        env.update((account_env or {}).get(name, {}))
        lines += [
            "[[accounts]]",
            f'name = "{name}"',
            f'binary = "{binary}"',
            f'session_bundle = "{(bundles or {}).get(name, "")}"',
            f'username = "{name}@example.com"',
            f'password = "{PASSWORD}"',
            f"max_concurrency = {(max_concurrency or {}).get(name, 48)}",
            "env = " + _inline(env),
        ]
    return "\n".join(lines) + "\n"


def start_serve(children: ChildProcesses, root: Path, port: int, config: str) -> SupervisedGateway:
    """`lingma-gw serve` on `config`, its stdout and stderr in root/gw.log."""
    (root / "rt").mkdir(mode=0o700, exist_ok=True)
    gateway = SupervisedGateway(root=root, port=port, proc=None)  # type: ignore[arg-type]
    gateway.config_path.write_text(config)
    redirect = 'exec "$0" "$@" >> "$LGW_LOG" 2>&1'
    gateway.proc = children.start(
        ["/bin/sh", "-c", redirect, *LINGMA_GW, "serve", "--config", str(gateway.config_path)],
        env={"LGW_LOG": str(root / "gw.log")},
    )
    return gateway


def _inline(table: dict[str, str]) -> str:
    return "{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in table.items()) + " }"


def script_path(root: Path, account: str) -> Path:
    return root / f"script-{account}.json"


def set_script(root: Path, account: str, rules: list[dict[str, Any]]) -> None:
    """Rewrite one emulator's script atomically (it re-reads the file when it changes)."""
    target = script_path(root, account)
    tmp = target.with_suffix(".tmp")
    tmp.write_text(json.dumps({"rules": rules}))
    tmp.replace(target)


class Kind(enum.StrEnum):
    OK = "ok"
    HTTP_ERROR = "http_error"  # a status >= 400 with a body in the API's error shape
    STREAM_ERROR = "stream_error"  # 200, then a well-formed in-band error event
    CUT = "cut"  # a stream that ended without a terminal event (malformed)
    BAD_SHAPE = "bad_shape"  # an error body that is not in the API's shape
    CONN_ERROR = "conn_error"  # refused / reset before a response
    HANG = "hang"


@dataclass
class Result:
    client: int
    api: str
    stream: bool
    text: str
    kind: Kind
    status: int | None
    started_at: float
    elapsed: float
    detail: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    wall_end: float = field(default_factory=time.time)  # to find it in the gateway's log

    @property
    def ended_at(self) -> float:
        return self.started_at + self.elapsed


def _openai_body(text: str, stream: bool) -> dict[str, Any]:
    return {"model": "auto", "stream": stream, "messages": [{"role": "user", "content": text}]}


def _anthropic_body(text: str, stream: bool) -> dict[str, Any]:
    return {**_openai_body(text, stream), "max_tokens": 400}


def _error_shaped(api: str, payload: Any) -> bool:
    if not isinstance(payload, dict):
        return False
    if api == "anthropic":
        error = payload.get("error")
        return payload.get("type") == "error" and isinstance(error, dict) and "type" in error
    error = payload.get("error")
    return isinstance(error, dict) and {"message", "type", "code"} <= error.keys()


def _sse_events(raw: str) -> list[tuple[str, str]]:
    """(event name, data) pairs of a complete SSE body."""
    events = []
    for block in raw.split("\n\n"):
        if not block.strip():
            continue
        name, data = "", []
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data.append(line[6:])
        events.append((name, "\n".join(data)))
    return events


def classify_stream(api: str, raw: str) -> tuple[Kind, str]:
    events = _sse_events(raw)
    if not events:
        return Kind.CUT, "empty stream"
    if api == "anthropic":
        name, data = events[-1]
        if name == "message_stop":
            return Kind.OK, ""
        if name == "error" and _error_shaped(api, json.loads(data)):
            return Kind.STREAM_ERROR, json.loads(data)["error"]["message"]
        return Kind.CUT, f"last event {name!r}"
    if events[-1][1] != "[DONE]" or len(events) < 2:
        return Kind.CUT, "no [DONE]"
    last = json.loads(events[-2][1])
    if "error" in last:
        if _error_shaped(api, last):
            return Kind.STREAM_ERROR, last["error"]["message"]
        return Kind.CUT, "malformed error event"
    if last.get("choices") and last["choices"][0].get("finish_reason"):
        return Kind.OK, ""
    return Kind.CUT, "no finish_reason before [DONE]"


async def one_request(
    http: aiohttp.ClientSession,
    base_url: str,
    *,
    client: int,
    api: str,
    stream: bool,
    text: str,
    bound: float = REQUEST_BOUND_S,
) -> Result:
    path = "/v1/messages" if api == "anthropic" else "/v1/chat/completions"
    body = _anthropic_body(text, stream) if api == "anthropic" else _openai_body(text, stream)
    headers = {"Authorization": f"Bearer {API_KEY}", "x-lingma-affinity": text}
    started = time.monotonic()

    def result(kind: Kind, status: int | None, detail: str = "", **kw: Any) -> Result:
        elapsed = time.monotonic() - started
        return Result(client, api, stream, text, kind, status, started, elapsed, detail, **kw)

    status: int | None = None
    try:
        async with asyncio.timeout(bound):
            async with http.post(base_url + path, json=body, headers=headers) as response:
                status = response.status
                kept = {k: v for k, v in response.headers.items() if k.lower() == "retry-after"}
                raw = (await response.read()).decode()
                if status != 200:
                    payload = json.loads(raw) if raw else None
                    kind = Kind.HTTP_ERROR if _error_shaped(api, payload) else Kind.BAD_SHAPE
                    return result(kind, status, raw[:200], headers=kept)
                if stream:
                    kind, detail = classify_stream(api, raw)
                    return result(kind, status, detail)
                payload = json.loads(raw)
                if payload.get("choices") or payload.get("content") is not None:
                    return result(Kind.OK, status)
                return result(Kind.BAD_SHAPE, status, raw[:200])
    except TimeoutError:
        return result(Kind.HANG, status, "request bound passed")
    except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError) as exc:
        kind = Kind.CUT if status is not None else Kind.CONN_ERROR
        return result(kind, status, f"{type(exc).__name__}: {exc}")
    except (aiohttp.ClientError, OSError) as exc:
        return result(Kind.CONN_ERROR, status, f"{type(exc).__name__}: {exc}")


TextFor = Callable[[int, int], str]


def default_text(client: int, serial: int) -> str:
    return f"load c{client} r{serial}"


class Load:
    """`clients` concurrent loops of requests until `stop()`; each client alternates APIs/modes."""

    def __init__(
        self,
        base_url: str,
        *,
        clients: int = CLIENTS,
        text: TextFor = default_text,
        retry_conn_errors: bool = False,
    ) -> None:
        self.base_url = base_url
        self.clients = clients
        self.text = text
        self.retry_conn_errors = retry_conn_errors
        self.results: list[Result] = []
        self.client_retries = 0
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._client(i)) for i in range(self.clients)]

    async def stop(self) -> list[Result]:
        self._stop.set()
        async with asyncio.timeout(REQUEST_BOUND_S + 10):
            await asyncio.gather(*self._tasks)
        return self.results

    async def wait_for(self, count: int, timeout: float = 30) -> None:
        """Until `count` more results have come in (proof the load is flowing)."""
        target = len(self.results) + count
        async with asyncio.timeout(timeout):
            while len(self.results) < target:
                await asyncio.sleep(0.02)

    async def _client(self, index: int) -> None:
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=5)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            serial = 0
            while not self._stop.is_set():
                api = "anthropic" if (index + serial) % 4 == 3 else "openai"
                stream = (index + serial) % 2 == 0
                text = self.text(index, serial)
                serial += 1
                res = await one_request(
                    http, self.base_url, client=index, api=api, stream=stream, text=text
                )
                while self.retry_conn_errors and res.kind is Kind.CONN_ERROR:
                    self.client_retries += 1  # what a client does when its server went away
                    if self.client_retries > 10 * self.clients:
                        break
                    await asyncio.sleep(0.05)
                    res = await one_request(
                        http, self.base_url, client=index, api=api, stream=stream, text=text
                    )
                self.results.append(res)


def tally(results: list[Result]) -> dict[str, int]:
    counts = Counter(r.kind.value for r in results)
    return {kind.value: counts.get(kind.value, 0) for kind in Kind}


def describe_failures(results: list[Result], limit: int = 8) -> str:
    bad = [r for r in results if r.kind is not Kind.OK][:limit]
    return "\n".join(
        f"{r.api} stream={r.stream} {r.kind} {r.status} {r.text!r} ended {r.wall_end:.3f} "
        f"after {r.elapsed:.2f}s: {r.detail}"
        for r in bad
    )


class Figures:
    """Scenario figures, printed (pytest -s) and written as JSON beside the test's files."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = {}

    def record(self, scenario: str, **values: Any) -> None:
        self.data[scenario] = values
        print(f"\n[figures] {scenario}: {json.dumps(values, sort_keys=True)}")
        with contextlib.suppress(OSError):
            self.path.write_text(json.dumps(self.data, indent=2, sort_keys=True))


async def retries_total(http: aiohttp.ClientSession, base_url: str) -> float:
    """Sum of lingma_gw_retries_total over reasons, from the gateway's /metrics."""
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with http.get(base_url + "/metrics", headers=headers) as response:
        text = await response.text()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("lingma_gw_retries_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return total
