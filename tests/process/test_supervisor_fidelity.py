"""Process: the real supervisor over a runtime that serves one client at a time, then a reload
and a restart-worker that replace the account's worker while its binary holds the work dir
(lingma-protocol.md §7.5: never two binaries on one work dir)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from protocol.vocabulary import ChildState
from tests.helpers import ChildProcesses
from tests.process.gateway import EMULATOR, SupervisedGateway, start_gateway

pytestmark = pytest.mark.process

S = ChildState
# TOML keys after the last [[accounts]] table: that account's binary environment.
ONE_CLIENT_LEGACY = 'env = { LINGMA_EMULATOR_SINGLE_CLIENT = "1", LINGMA_EMULATOR_NO_ACP = "1" }\n'
ONE_CLIENT_ACP = 'env = { LINGMA_EMULATOR_SINGLE_CLIENT = "1" }\n'


def runtime_log(gw: SupervisedGateway) -> str:
    return (gw.root / "st" / "accounts" / "acct-a" / "logs" / "lingma.log").read_text()


async def chats_all_succeed(gw: SupervisedGateway, texts: list[str]) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        replies = await asyncio.gather(*(gw.chat(http, text) for text in texts))
    for text, (status, body) in zip(texts, replies, strict=True):
        assert status == 200, body
        assert f"You said: {text}" in body["choices"][0]["message"]["content"]


async def test_one_client_runtime_and_replacements_on_one_work_dir(
    children: ChildProcesses, sock_dir: Path
) -> None:
    gw = start_gateway(children, sock_dir, {"acct-a": EMULATOR}, extra=ONE_CLIENT_LEGACY)
    await gw.login_all(["acct-a"])
    # Legacy asks over a runtime that keeps only its newest connection: all succeed, serialized
    # over one connection once the worker noticed the eviction.
    await chats_all_succeed(gw, [f"one client {n}" for n in range(4)])
    assert "serves one client at a time" in gw.log
    before = (await gw.rows())["acct-a"]

    # Reload with changed settings: the replacement waits for the work dir, then takes over.
    gw.write_config({"acct-a": EMULATOR}, ONE_CLIENT_ACP)
    code, out, err = await gw.cli("reload")
    assert code == 0 and "replacing acct-a" in out, (out, err)

    async def replaced() -> bool:
        row = (await gw.rows())["acct-a"]
        return row.pid != before.pid and row.state == S.READY

    deadline = asyncio.get_running_loop().time() + 40
    while not await replaced():
        assert asyncio.get_running_loop().time() < deadline, await gw.rows()
        await asyncio.sleep(0.1)
    after = (await gw.rows())["acct-a"]
    assert after.login == "logged_in"  # the work dir, and its login, carried over
    await chats_all_succeed(gw, [f"after reload {n}" for n in range(3)])

    code, _, err = await gw.cli("restart-worker", "acct-a")
    assert code == 0, err
    await gw.wait_states({"acct-a": S.READY}, timeout=40)
    await chats_all_succeed(gw, ["after restart"])
    # At no point did two binaries run on the account's work dir.
    assert "another runtime instance" not in runtime_log(gw)
    assert "waiting for the previous Lingma binary" in gw.log
