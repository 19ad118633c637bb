"""Runs in the worker: the files a Lingma runtime leaves in its work dir to say where it listens.

`<workDir>/.info.json` (`{"websocketPort", "pid", "ipcServerPath", "isDev"}`) or the legacy
three-line `.info` (lingma-protocol.md §3.2), and `cache/machine_token.json`, whose token
QoderCN builds expect as the `Cosy-MachineToken` header (§3.3).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import msgspec


class Endpoint(msgspec.Struct, frozen=True):
    port: int
    pid: int | None = None
    source: str = "explicit"


def read_discovery(work_dir: str | Path) -> Endpoint | None:
    """The runtime's port from `<workDir>/.info.json`, else the legacy three-line `.info`."""
    root = Path(work_dir)
    with contextlib.suppress(OSError, ValueError, msgspec.DecodeError):
        info = msgspec.json.decode((root / ".info.json").read_bytes())
        if isinstance(info, dict) and int(info.get("websocketPort") or 0) > 0:
            pid = info.get("pid")
            return Endpoint(int(info["websocketPort"]), int(pid) if pid else None, ".info.json")
    with contextlib.suppress(OSError, ValueError):
        lines = (root / ".info").read_text().split("\n")
        port = int(lines[0].strip())
        pid = int(lines[1].strip()) if len(lines) > 1 and lines[1].strip() else None
        if port > 0:
            return Endpoint(port, pid, ".info")
    return None


def remove_discovery(work_dir: str | Path) -> None:
    """Forget a previous run's files so readiness waits for the new binary's own."""
    for name in (".info.json", ".info"):
        with contextlib.suppress(FileNotFoundError):
            (Path(work_dir) / name).unlink()


def machine_token_headers(work_dir: str | Path) -> dict[str, str]:
    """`Cosy-MachineToken` when the work dir has a non-empty token (QoderCN builds want it)."""
    with contextlib.suppress(OSError, ValueError, msgspec.DecodeError):
        data = msgspec.json.decode((Path(work_dir) / "cache" / "machine_token.json").read_bytes())
        token = data.get("token") if isinstance(data, dict) else None
        if isinstance(token, str) and token:
            return {"Cosy-MachineToken": token}
    return {}
