"""Process: named keys, host-wide limits and the usage ledger through the real CLI and HTTP.

One `lingma-gw serve` (two fronts sharing the port, one emulated account) serves the tests in
file order: a key made with `lingma-gw keys add` works at once on both fronts, its limits hold
across them, `usage` (CLI and admin endpoint) and /metrics agree, a locked database degrades
the ledger without failing requests. Then the same state dir is stopped with SIGTERM under
load (every answered request has its row) and SIGKILLed under load (at most about a second of
rows is lost), restarted each time. A corrupt database file stops the start with advice.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import signal
import sqlite3
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from protocol.vocabulary import ChildState
from tests.helpers import ChildProcesses, free_port, wait_until_async
from tests.process.gateway import API_KEY, SupervisedGateway, wait_exit
from tests.process.load_support import ADMIN_TOKEN, render_config, set_script, start_serve

pytestmark = pytest.mark.process

ACCOUNT = "acct-a"
FRONTS = ["front-0", "front-1"]
FAST = {"LINGMA_EMULATOR_FIRST_TOKEN_MS": "5", "LINGMA_EMULATOR_REPLY_TOKENS": "3"}


@dataclass
class Host:
    root: Path
    port: int
    children: ChildProcesses
    gw: SupervisedGateway | None = None
    secrets: dict[str, str] = field(default_factory=dict)

    @property
    def db(self) -> Path:
        return self.root / "st" / "usage.db"

    def config(self, extra: str = "") -> str:
        return render_config(self.root, self.port, [ACCOUNT], fronts=2, lingma_env=FAST) + extra

    def start(self) -> SupervisedGateway:
        self.gw = start_serve(self.children, self.root, self.port, self.config())
        return self.gw

    def rows(self, where: str = "1=1") -> int:
        with contextlib_closing(sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)) as conn:
            return int(conn.execute(f"SELECT COUNT(*) FROM usage WHERE {where}").fetchone()[0])


class contextlib_closing:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        return self.conn

    def __exit__(self, *exc: object) -> None:
        self.conn.close()


@pytest.fixture(scope="module")
def host() -> Iterator[Host]:
    root = Path(tempfile.mkdtemp(prefix="lgw-keys-", dir="/tmp"))
    children = ChildProcesses()
    try:
        set_script(root, ACCOUNT, [])
        yield Host(root, free_port(), children)
    finally:
        children.kill_all()
        if not os.environ.get("LGW_KEEP_LOGS"):
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    # A new connection per request: SO_REUSEPORT spreads connections over both fronts.
    connector = aiohttp.TCPConnector(force_close=True, limit=0)
    timeout = aiohttp.ClientTimeout(total=20)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        yield session


async def up(gw: SupervisedGateway) -> None:
    """Every front and the account READY (logged in once; a restart keeps the login)."""

    async def settled() -> bool:
        if gw.proc.poll() is not None:
            raise AssertionError(f"lingma-gw exited {gw.proc.returncode}:\n{gw.log}")
        try:
            rows = await gw.rows()
        except Exception:  # not up yet
            return False
        return ACCOUNT in rows and rows[ACCOUNT].state in (ChildState.READY, ChildState.DEGRADED)

    await wait_until_async(settled, 40, "the account to start")
    if (await gw.rows())[ACCOUNT].state is not ChildState.READY:
        await gw.login_all([ACCOUNT], timeout=40)
    await gw.wait_states({n: ChildState.READY for n in [ACCOUNT, *FRONTS]}, timeout=40)


async def chat(
    http: aiohttp.ClientSession,
    gw: SupervisedGateway,
    key: str,
    model: str = "auto",
    api: str = "openai",
) -> tuple[int, dict[str, str], Any]:
    if api == "anthropic":
        url, headers = f"{gw.base_url}/v1/messages", {"x-api-key": key}
        body: dict[str, Any] = {"model": model, "max_tokens": 50}
    else:
        url, headers = f"{gw.base_url}/v1/chat/completions", {"Authorization": f"Bearer {key}"}
        body = {"model": model}
    body["messages"] = [{"role": "user", "content": "hello"}]
    async with http.post(url, json=body, headers=headers) as response:
        return response.status, dict(response.headers), await response.json(content_type=None)


async def add_key(gw: SupervisedGateway, name: str, *flags: str) -> str:
    code, out, err = await gw.cli("keys", "add", name, *flags)
    assert code == 0, err
    secret = out.strip()
    assert secret.startswith("sk-lgw-") and "\n" not in secret and "shown only" in err
    assert secret not in gw.log  # never logged
    return secret


async def test_a_cli_key_works_at_once_and_its_rules_hold(
    host: Host, http: aiohttp.ClientSession
) -> None:
    gw = host.start()
    await up(gw)
    assert (await chat(http, gw, API_KEY))[0] == 200  # the flat list keeps working
    secret = await add_key(gw, "alice", "--models", "auto,qwen*")
    host.secrets["alice"] = secret
    statuses = [(await chat(http, gw, secret))[0] for _ in range(6)]
    assert statuses == [200] * 6  # on both fronts, no restart

    status, _, body = await chat(http, gw, secret, model="gpt-4o")
    assert status == 403 and body["error"]["type"] == "permission_error"
    assert "'alice' may not use model 'gpt-4o'" in body["error"]["message"]
    status, _, body = await chat(http, gw, secret, model="claude-3-5-sonnet", api="anthropic")
    assert status == 403 and body["type"] == "error"
    assert body["error"]["type"] == "permission_error"

    code, out, _ = await gw.cli("keys", "disable", "alice")
    assert code == 0 and "disabled key alice" in out
    status, _, body = await chat(http, gw, secret)
    assert status == 401 and "'alice' is disabled" in body["error"]["message"]
    assert (await gw.cli("keys", "enable", "alice"))[0] == 0
    assert (await chat(http, gw, secret))[0] == 200

    code, _, err = await gw.cli("keys", "remove", "api-key-1")
    assert code == 1 and "comes from [auth] api_keys / API_KEYS" in err
    code, out, _ = await gw.cli("keys", "list", "--json")
    listed = {k["name"]: k for k in json.loads(out)}
    assert listed["alice"]["source"] == "cli" and listed["alice"]["limits"]["models"] == [
        "auto",
        "qwen*",
    ]
    assert listed["api-key-1"]["source"] == "api_keys" and secret not in out


async def test_rpm_and_concurrency_hold_across_two_fronts(
    host: Host, http: aiohttp.ClientSession
) -> None:
    assert host.gw is not None
    gw = host.gw
    burst = await add_key(gw, "burst", "--rpm", "10")
    results = await asyncio.gather(*(chat(http, gw, burst) for _ in range(16)))
    statuses = sorted(status for status, _, _ in results)
    assert statuses == [200] * 10 + [429] * 6, statuses
    refused = [(h, b) for s, h, b in results if s == 429]
    assert all(int(h["Retry-After"]) >= 1 for h, _ in refused)
    assert all(b["error"]["code"] == "rate_limit_exceeded" for _, b in refused)
    await wait_until_async(
        lambda: _true(host.rows("key = 'burst'") == 16), 10, "16 ledger rows for burst"
    )
    assert host.rows("key = 'burst' AND front = 0") and host.rows("key = 'burst' AND front = 1")

    pair = await add_key(gw, "pair", "--max-concurrent", "2")
    host_slow(host)
    results = await asyncio.gather(*(chat(http, gw, pair) for _ in range(6)))
    statuses = sorted(status for status, _, _ in results)
    assert statuses == [200, 200, 429, 429, 429, 429], statuses
    host_fast(host)


def host_slow(host: Host) -> None:
    set_script(host.root, ACCOUNT, [{"delay_ms": 600}])


def host_fast(host: Host) -> None:
    set_script(host.root, ACCOUNT, [])


async def _true(value: bool) -> bool:
    return value


async def test_usage_cli_admin_endpoint_and_metrics_agree(
    host: Host, http: aiohttp.ClientSession
) -> None:
    assert host.gw is not None
    gw = host.gw
    await wait_until_async(lambda: _true(host.rows("key = 'pair'") == 6), 10, "the last rows")
    code, out, _ = await gw.cli("usage", "--json", "--by", "key", "--since", "1h")
    assert code == 0
    cli = {g["name"]: g for g in json.loads(out)["groups"]}
    # 7 served, 2 refused for their model; the request while disabled has no row.
    assert cli["alice"]["requests"] == host.rows("key = 'alice'") == 9
    assert (cli["alice"]["errors"], cli["burst"]["limited"], cli["pair"]["limited"]) == (2, 6, 4)
    assert cli["alice"]["prompt_tokens"] > 0 and cli["alice"]["completion_tokens"] > 0

    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    url = f"{gw.base_url}/internal/usage?by=key&since=1h"
    async with http.get(url, headers=admin) as response:
        assert response.status == 200
        assert json.loads(await response.text())["groups"] == json.loads(out)["groups"]
    async with http.get(url, headers={"Authorization": f"Bearer {API_KEY}"}) as response:
        assert response.status == 401
    bad = f"{gw.base_url}/internal/usage?by=planet"
    async with http.get(bad, headers=admin) as response:
        assert response.status == 400 and "key, account or model" in await response.text()

    code, out, _ = await gw.cli("usage", "--by", "account")
    assert code == 0 and ACCOUNT in out and "REQUESTS" in out
    metrics = await gw.metrics(http)
    assert 'lingma_gw_key_requests_total{key="burst",status="429"} 6.0' in metrics
    assert 'lingma_gw_usage_ledger_state{state="ok"} 1.0' in metrics
    assert all(secret not in metrics for secret in host.secrets.values())


async def test_config_keys_reach_the_running_fronts_on_reload(
    host: Host, http: aiohttp.ClientSession
) -> None:
    assert host.gw is not None
    gw = host.gw
    fronts_before = {n: r.pid for n, r in (await gw.rows()).items() if n in FRONTS}
    digest = hashlib.sha256(b"sk-carol-from-config").hexdigest()
    extra = f'[[keys]]\nname = "carol"\nsha256 = "{digest}"\nmodels = ["auto"]\n'
    gw.config_path.write_text(host.config(extra))
    assert (await chat(http, gw, "sk-carol-from-config"))[0] == 401
    code, _, err = await gw.cli("reload")
    assert code == 0, err
    assert [(await chat(http, gw, "sk-carol-from-config"))[0] for _ in range(4)] == [200] * 4
    assert {n: r.pid for n, r in (await gw.rows()).items() if n in FRONTS} == fronts_before
    code, _, err = await gw.cli("keys", "disable", "carol")
    assert code == 1 and "defined in the config file's [[keys]]: set disabled = true" in err
    await wait_until_async(lambda: _true(host.rows("key = 'carol'") == 4), 10, "carol's rows")


async def test_a_locked_database_degrades_the_ledger_but_not_the_service(
    host: Host, http: aiohttp.ClientSession
) -> None:
    assert host.gw is not None
    gw = host.gw
    before = host.rows()
    holder = sqlite3.connect(host.db, isolation_level=None, timeout=5)
    holder.execute("BEGIN IMMEDIATE")  # someone else's long write transaction
    try:
        assert [(await chat(http, gw, API_KEY))[0] for _ in range(5)] == [200] * 5

        async def degraded() -> bool:
            async with http.get(f"{gw.base_url}/healthz") as response:
                return bool((await response.json())["ledger"]["state"] == "degraded")

        await wait_until_async(degraded, 10, "/healthz to report the ledger degraded")
        code, out, _ = await gw.cli("status")
        assert code == 1 and "usage ledger: degraded" in out and "locked" in out
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    await wait_until_async(lambda: _true(host.rows() == before + 5), 10, "the queued rows")
    code, out, _ = await gw.cli("status", "--json")
    assert json.loads(out)["ledger"] == "ok"


@dataclass
class LoadResult:
    statuses: list[tuple[float, int]] = field(default_factory=list)  # (wall time done, status)
    errors: int = 0  # no answer reached the client (refused, reset, timed out)
    refused_draining: int = 0


async def load(gw: SupervisedGateway, stop: asyncio.Event, clients: int = 8) -> LoadResult:
    """Closed-loop clients with the flat key until `stop`; connection errors are counted."""
    result = LoadResult()
    connector = aiohttp.TCPConnector(force_close=True, limit=0)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=15)
    ) as http:

        async def client() -> None:
            while not stop.is_set():
                try:
                    status, _, body = await chat(http, gw, API_KEY)
                except (TimeoutError, aiohttp.ClientError):
                    result.errors += 1
                    await asyncio.sleep(0.05)
                    continue
                if status == 503 and "shutting down" in str(body):
                    result.refused_draining += 1  # refused before any chat handler ran
                else:
                    result.statuses.append((time.time(), status))

        await asyncio.gather(*(client() for _ in range(clients)))
    return result


async def test_sigterm_under_load_loses_no_row(host: Host) -> None:
    assert host.gw is not None
    gw = host.gw
    before = host.rows("key = 'api-key-1'")
    stop = asyncio.Event()
    running = asyncio.create_task(load(gw, stop))
    await wait_until_async(lambda: _true(host.rows() > before + 40), 20, "load to flow")
    gw.signal(signal.SIGTERM)
    assert await wait_exit(gw.proc, 30) == 0
    stop.set()
    result = await running
    # Every answer a chat handler gave has its row (a 503 "shutting down" came before one);
    # a request whose answer never reached the client may have one too.
    rows = host.rows("key = 'api-key-1'") - before
    answered = len(result.statuses)
    assert answered and answered <= rows <= answered + result.errors, (answered, rows, result)


async def test_sigkill_under_load_loses_at_most_about_a_second(host: Host) -> None:
    gw = host.start()
    await up(gw)
    code, out, _ = await gw.cli("keys", "list", "--json")
    assert code == 0 and "alice" in out  # the CLI keys survived the restart in the database
    before = host.rows("key = 'api-key-1'")
    stop = asyncio.Event()
    running = asyncio.create_task(load(gw, stop))
    await wait_until_async(lambda: _true(host.rows() > before + 60), 20, "load to flow")
    killed_at = time.time()
    gw.signal(signal.SIGKILL)
    await wait_exit(gw.proc, 10)
    stop.set()
    result = await running
    rows = host.rows("key = 'api-key-1'") - before
    answered = [t for t, s in result.statuses if s == 200]
    settled = [t for t in answered if t < killed_at - 1.5]
    assert len(settled) <= rows <= len(answered), (len(settled), rows, len(answered))

    gw = host.start()  # the database opens cleanly after the kill (WAL recovery)
    await up(gw)
    code, out, _ = await gw.cli("usage", "--json")
    assert code == 0
    groups = {g["name"]: g for g in json.loads(out)["groups"]}
    assert groups["api-key-1"]["requests"] == host.rows("key = 'api-key-1'")
    gw.signal(signal.SIGTERM)
    assert await wait_exit(gw.proc, 30) == 0


async def test_a_corrupt_database_stops_the_start_with_advice(
    children: ChildProcesses, sock_dir: Path
) -> None:
    (sock_dir / "st").mkdir(mode=0o700)
    (sock_dir / "st" / "usage.db").write_bytes(b"not a database, just bytes\n" * 200)
    set_script(sock_dir, ACCOUNT, [])
    port = free_port()
    gw = start_serve(children, sock_dir, port, render_config(sock_dir, port, [ACCOUNT]))
    assert await wait_exit(gw.proc, 20) == 78
    log = gw.log
    assert "usage.db" in log and "corrupt or not a SQLite database" in log and "mv " in log
    assert "Traceback" not in log
    assert not list((sock_dir / "st").glob("accounts/*/.info.json"))  # nothing was started
