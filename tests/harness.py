"""Test-only: a whole gateway without the supervisor — real emulator-backed workers, a real front.

Each worker is `python -m worker --spec` whose `binary` is a wrapper that execs the emulator,
logged in through the emulator's manual-login callback; the front is `python -m front --spec`
over those workers' sockets. `start_gateway` returns once /healthz says ok (with a deadline).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from protocol.front_socket import WorkerRef
from protocol.keys import KeyEntry, KeySource, secret_digest
from protocol.specs import FrontSpec
from tests import specs
from tests.component.worker_support import (
    WorkerProcess,
    log_in,
    make_spec,
    start_worker,
)
from tests.helpers import PYTHON, ChildProcesses, free_port, wait_until

API_KEY = "sk-test-front"
ADMIN_TOKEN = "adm-test-front"
HEALTH_TIMEOUT = 30.0


@dataclass
class DirectGateway:
    root: Path
    base_url: str
    spec: FrontSpec
    workers: list[WorkerProcess]
    front: Any  # subprocess.Popen
    children: ChildProcesses
    api_key: str = API_KEY
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def front_log(self) -> Path:
        return self.root / "front.log"

    def set_script(self, rules: Sequence[dict[str, Any]]) -> None:
        """The same emulator script on every worker."""
        for worker in self.workers:
            worker.set_script(rules)

    def health(self) -> dict[str, Any]:
        try:
            with urllib.request.urlopen(f"{self.base_url}/healthz", timeout=2) as response:
                payload: dict[str, Any] = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            payload = json.loads(exc.read())
        return payload

    def wait_ready(self, count: int | None = None, timeout: float = HEALTH_TIMEOUT) -> None:
        want = len(self.workers) if count is None else count

        def ready() -> bool:
            if self.front.poll() is not None:
                raise AssertionError(
                    f"front exited {self.front.returncode}:\n{self.front_log.read_text()}"
                )
            try:
                return int(self.health().get("pool_ready", 0)) >= want
            except OSError:
                return False

        wait_until(ready, timeout, f"{want} READY workers behind the front")


def start_workers(
    children: ChildProcesses, root: Path, count: int, **overrides: Any
) -> list[WorkerProcess]:
    workers = []
    for index in range(count):
        worker_root = root / f"w{index}"
        worker_root.mkdir(mode=0o700)
        spec = make_spec(worker_root, name=f"acct-{index}", **overrides)
        workers.append(start_worker(children, spec, worker_root))

    async def log_in_all() -> None:
        await asyncio.gather(*(log_in(w) for w in workers))

    asyncio.run(log_in_all())
    return workers


def front_spec(root: Path, workers: Sequence[WorkerProcess], **overrides: Any) -> FrontSpec:
    fields: dict[str, Any] = {
        "index": 0,
        "host": "127.0.0.1",
        "port": free_port(),
        "reuse_port": False,
        "socket_path": str(root / "front.sock"),
        "control_socket": str(root / "control.sock"),  # nobody listens: /metrics is the front's own
        "workers": [WorkerRef(name=w.spec.name, socket_path=w.spec.socket_path) for w in workers],
        "keys": [api_key_entry(API_KEY)],
        "admin_token": ADMIN_TOKEN,
        "ping_interval_s": 0.2,
        "request_timeout_s": 30.0,
    }
    fields.update(overrides)
    return specs.front_spec(**fields)


def api_key_entry(secret: str, name: str = "api-key-1", slot: int = 0) -> KeyEntry:
    """One flat key as the supervisor would push it (no limits, so no limits table needed)."""
    return KeyEntry(name=name, sha256=secret_digest(secret), source=KeySource.API_KEYS, slot=slot)


def start_front(children: ChildProcesses, root: Path, spec: FrontSpec, name: str = "front") -> Any:
    spec_path = root / f"{name}.json"
    spec_path.write_bytes(msgspec.json.encode(spec))
    log_path = root / f"{name}.log"
    command = 'exec "$0" -m front --spec "$1" >>"$2" 2>&1'
    return children.start(["/bin/sh", "-c", command, PYTHON, str(spec_path), str(log_path)])


def start_gateway(
    children: ChildProcesses,
    root: Path,
    *,
    workers: int = 1,
    worker_overrides: dict[str, Any] | None = None,
    **front_overrides: Any,
) -> DirectGateway:
    processes = start_workers(children, root, workers, **(worker_overrides or {}))
    spec = front_spec(root, processes, **front_overrides)
    front = start_front(children, root, spec)
    gateway = DirectGateway(root, f"http://127.0.0.1:{spec.port}", spec, processes, front, children)
    gateway.wait_ready()
    return gateway


def wait_front_socket(spec: FrontSpec, timeout: float = 10.0) -> None:
    wait_until(lambda: os.path.exists(spec.socket_path), timeout, "the front's Unix socket")


def elapsed_since(start: float) -> float:
    return time.monotonic() - start
