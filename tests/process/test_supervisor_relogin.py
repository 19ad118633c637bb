"""Process: a login lost while running, through the real supervisor (issue 16 item 1).

acct-a has credentials and auto-login, but its browser cannot start (a missing Chromium), so
every auto-login attempt fails at once and the next follows a short pause: acct-a stays
"logging in" long enough to watch. acct-b has no credentials. A chat that logs acct-a out is
served by acct-b; `lingma-gw status` shows acct-a's attempt; once acct-b is logged out too, a
request whose only candidate is logging in waits up to the queue timeout, then gets 503 with
Retry-After, and a request that waits while acct-a's login completes is served by acct-a.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from protocol.vocabulary import ChildState, LoginState
from tests.helpers import ChildProcesses, free_port, wait_until_async
from tests.process.gateway import API_KEY, EMULATOR, SupervisedGateway
from tests.process.load_support import script_path, set_script, start_serve

pytestmark = pytest.mark.process

QUEUE_TIMEOUT_S = 4.0


def config(root: Path, port: int) -> str:
    accounts = {"acct-a": 'username = "demo"\npassword = "demo"', "acct-b": ""}
    lines = [
        "[server]",
        f'listen = "127.0.0.1:{port}"',
        f'runtime_dir = "{root / "rt"}"',
        f'state_dir = "{root / "st"}"',
        "ping_interval_s = 0.25",
        "ping_timeout_s = 3",
        "stats_interval_s = 0.5",
        "[auth]",
        f'api_keys = ["{API_KEY}"]',
        "[limits]",
        f"queue_timeout_s = {QUEUE_TIMEOUT_S}",
        "[browser]",
        "auto_login = true",
        f'executable_path = "{root / "no-chromium"}"',  # every attempt fails at once
        "login_max_retry = 20",
        "login_retry_pause_s = 0.5",
    ]
    for name, credentials in accounts.items():
        env = json.dumps(str(script_path(root, name)))
        lines += [
            "[[accounts]]",
            f'name = "{name}"',
            f'binary = "{EMULATOR}"',
            credentials,
            f"env = {{ LINGMA_EMULATOR_SCRIPT = {env} }}",
        ]
    return "\n".join(lines) + "\n"


async def ask(
    gw: SupervisedGateway, http: aiohttp.ClientSession, text: str, affinity: str
) -> tuple[int, dict[str, Any], dict[str, str]]:
    body = {"model": "auto", "messages": [{"role": "user", "content": text}]}
    headers = {"Authorization": f"Bearer {API_KEY}", "x-lingma-affinity": affinity}
    async with http.post(
        f"{gw.base_url}/v1/chat/completions", json=body, headers=headers
    ) as response:
        payload: dict[str, Any] = await response.json(content_type=None)
        return response.status, payload, dict(response.headers)


async def affinity_of(gw: SupervisedGateway, http: aiohttp.ClientSession, account: str) -> str:
    """An affinity value whose chats go to `account` first (rendezvous hashing is stable)."""
    for index in range(64):
        status, body, _ = await ask(gw, http, "which one?", f"probe-{index}")
        assert status == 200, body
        if body["served_by"] == account:
            return f"probe-{index}"
    raise AssertionError(f"no affinity value routes to {account}")


async def front_sees_none_ready(gw: SupervisedGateway, http: aiohttp.ClientSession) -> bool:
    async with http.get(f"{gw.base_url}/healthz") as response:
        return bool((await response.json())["pool_ready"] == 0)


async def attempt_shown(gw: SupervisedGateway) -> bool:
    """`lingma-gw status` shows acct-a on a second (or later) auto-login attempt."""
    row = (await gw.rows())["acct-a"]
    if row.login is not LoginState.LOGGING_IN or row.login_attempt < 2:
        return False
    code, out, _ = await gw.cli("status")
    line = next(line for line in out.splitlines() if line.startswith("acct-a"))
    return code == 1 and re.search(r"logging in, attempt \d+", line) is not None


async def test_a_logged_out_account_is_routed_around_and_waited_for(
    children: ChildProcesses, sock_dir: Path
) -> None:
    set_script(sock_dir, "acct-a", [{"match": "bye", "action": "logout"}])
    set_script(sock_dir, "acct-b", [{"match": "ciao", "action": "logout"}])
    port = free_port()
    gw = start_serve(children, sock_dir, port, config(sock_dir, port))
    await gw.login_all(["acct-a", "acct-b"])  # acct-a's first auto-login keeps failing
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        to_a = await affinity_of(gw, http, "acct-a")
        to_b = await affinity_of(gw, http, "acct-b")

        # acct-a loses its login mid-answer: the chat moves to acct-b before any byte was sent.
        status, body, _ = await ask(gw, http, "bye", to_a)
        assert status == 200 and body["served_by"] == "acct-b", body
        await wait_until_async(lambda: attempt_shown(gw), 20, "status to show attempt 2+")
        status, body, _ = await ask(gw, http, "still here?", to_a)
        assert status == 200 and body["served_by"] == "acct-b", body

        # acct-b loses its login too, and has no auto-login: only acct-a is left, logging in.
        status, _, _ = await ask(gw, http, "ciao", to_b)
        assert status == 503
        await gw.wait_states({"acct-b": ChildState.DEGRADED})
        assert (await gw.rows())["acct-b"].login is LoginState.LOGGED_OUT
        await wait_until_async(lambda: front_sees_none_ready(gw, http), 10, "the front's view")

        started = time.monotonic()
        status, body, headers = await ask(gw, http, "anyone?", to_a)
        waited = time.monotonic() - started
        assert status == 503 and headers["Retry-After"] == "5", (status, body)
        assert "acct-a: logging in" in body["error"]["message"]
        assert waited >= QUEUE_TIMEOUT_S - 0.5, waited  # it waited, then gave up

        # A request waiting while acct-a's login completes is served by acct-a.
        waiting = asyncio.create_task(ask(gw, http, "now?", to_b))
        await gw.login("acct-a")
        status, body, _ = await waiting
        assert status == 200 and body["served_by"] == "acct-a", body
    metrics = await _metrics(gw)
    assert re.search(r'lingma_gw_worker_login_attempts_total\{[^}]*outcome="error"', metrics)


async def _metrics(gw: SupervisedGateway) -> str:
    async with aiohttp.ClientSession() as http:
        return await gw.metrics(http)
