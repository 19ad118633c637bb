"""Process: SIGHUP adds an account under load without a failed request; a second instance is
refused; a SIGKILLed supervisor leaves no orphans; bad configs exit 78."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import aiohttp
import pytest

from protocol.vocabulary import ChildState
from tests.helpers import ChildProcesses, assert_all_gone
from tests.process.gateway import EMULATOR, LINGMA_GW, start_gateway, wait_exit

pytestmark = pytest.mark.process

S = ChildState


async def test_sighup_adds_an_account_without_failing_a_request(
    children: ChildProcesses, sock_dir: Path
) -> None:
    gw = start_gateway(children, sock_dir, {"acct-a": EMULATOR})
    await gw.login_all(["acct-a"])
    await gw.wait_states({"front-0": S.READY})
    before = await gw.rows()
    failures: list[tuple[int, object]] = []
    served: list[str] = []
    stop = asyncio.Event()

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http:

        async def load() -> None:
            while not stop.is_set():
                status, body = await gw.chat(http, f"under reload {len(served) + len(failures)}")
                if status == 200:
                    served.append(body["served_by"])
                else:
                    failures.append((status, body))

        traffic = asyncio.create_task(load())
        try:
            gw.write_config({"acct-a": EMULATOR, "acct-b": EMULATOR})
            gw.signal(signal.SIGHUP)
            await gw.login_all(["acct-b"])
            async with asyncio.timeout(30):
                while "acct-b" not in served:  # distinct affinities spread over both
                    await asyncio.sleep(0.05)
        finally:
            stop.set()
            await traffic
        assert failures == []
        assert len(served) >= 10 and set(served) == {"acct-a", "acct-b"}

    after = await gw.rows()
    # acct-a's settings did not change and the front only got a WorkersUpdate: nobody restarted.
    for name in ("acct-a", "front-0"):
        assert (after[name].pid, after[name].restarts) == (before[name].pid, 0)

    gw.config_path.write_text(gw.config_path.read_text() + "surprise = true\n")
    code, _, err = await gw.cli("reload")
    assert code == 1 and "not reloaded" in err and "unknown key `surprise`" in err
    assert (await gw.rows())["acct-b"].state == S.READY  # still serving the old config

    gw.write_config({"acct-a": EMULATOR, "acct-b": EMULATOR})  # valid again
    code, out = await run(*LINGMA_GW, "serve", "--config", str(gw.config_path))
    assert code == 1 and "another lingma-gw answers on" in out  # no hijacked sockets
    assert (await gw.rows())["acct-a"].state == S.READY

    # Even a SIGKILLed supervisor leaves nothing behind: every child has a parent-death guard.
    tree = gw.tree()
    gw.signal(signal.SIGKILL)
    assert await wait_exit(gw.proc, 10) == -signal.SIGKILL
    assert_all_gone(tree, timeout=10)


async def run(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    async with asyncio.timeout(30):
        out, _ = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_bad_config_exits_78_with_the_key_path(sock_dir: Path) -> None:
    bad = sock_dir / "bad.toml"
    bad.write_text(
        '[server]\nlisten = "127.0.0.1:8080"\nlistne = "oops"\n[[accounts]]\nname = "a"\n'
    )
    for command in ("serve", "check-config"):
        code, out = await run(*LINGMA_GW, command, "--config", str(bad))
        assert code == 78, out
        assert out.strip() == "lingma-gw: bad config: server: unknown key `listne`"
    good = sock_dir / "good.toml"
    good.write_text(f'[server]\nruntime_dir = "{sock_dir}/rt"\n[[accounts]]\nname = "a"\n')
    code, out = await run(*LINGMA_GW, "check-config", "--config", str(good))
    assert code == 0 and f"{good}: OK" in out and "accounts: a" in out
    code, out = await run(*LINGMA_GW, "--version")
    assert code == 0 and out.startswith("lingma-gw ")
