"""Process: every process of a real `lingma-gw serve` says what it is in ps, top, systemd-cgls.

Run the way a reference-gateway deployment would start it: no [[accounts]] in the file, just
INSTANCE_COUNT=2 and LINGMA_BIN in the environment, which must give two accounts with a worker
and an emulated runtime each, every one with its own work dir.
"""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from protocol.vocabulary import ChildState
from tests.helpers import ChildProcesses
from tests.process.gateway import EMULATOR, start_gateway

pytestmark = pytest.mark.process

S = ChildState


def cmdline(pid: int) -> str:
    """What ps and systemd-cgls print: /proc/PID/cmdline, NULs as spaces."""
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()


async def test_every_process_has_a_title_naming_its_role(
    children: ChildProcesses, sock_dir: Path
) -> None:
    env = {"INSTANCE_COUNT": "2", "LINGMA_BIN": EMULATOR}
    gw = start_gateway(children, sock_dir, {}, env=env)
    accounts = ["account-1", "account-2"]
    await gw.wait_states({**{a: S.DEGRADED for a in accounts}, "front-0": S.READY}, 40)
    supervisor = psutil.Process(gw.proc.pid)
    assert cmdline(supervisor.pid) == "lingma-gw: supervisor"
    titles = sorted(cmdline(child.pid) for child in supervisor.children())
    # multiprocessing's own helper for the spawn start method names itself already.
    helpers = [t for t in titles if "from multiprocessing.resource_tracker import main" in t]
    assert len(helpers) <= 1
    assert [t for t in titles if t not in helpers] == [
        "lingma-gw: front 0",
        "lingma-gw: worker account-1",
        "lingma-gw: worker account-2",
    ]
    rows = await gw.rows()
    for account in accounts:
        runtime = rows[account].binary_pid
        assert runtime is not None
        work_dir = sock_dir / "st" / "accounts" / account
        assert cmdline(runtime).startswith(f"lingma-emulator: {work_dir} (port ")
