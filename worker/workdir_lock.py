"""Runs in the worker (and in `lingma-gw doctor`): one Lingma binary per work dir, by an flock.

Two live runtimes on one work dir are undocumented (lingma-protocol.md §7.5, §13): expect the
discovery file overwritten by the last starter and SQLite contention. So whoever starts a
binary on a work dir first takes an exclusive `flock` on `<workDir>/.lingma-gw.lock` and hands
the descriptor to the binary as well: the lock lasts until both have exited, even when the
worker is SIGKILLed and its binary lingers for a moment. A reload or restart starts the
replacement while the old binary may still run; the replacement waits here (bounded, polling)
instead of starting a second binary on the same dir.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import time
from pathlib import Path

log = logging.getLogger(__name__)

LOCK_NAME = ".lingma-gw.lock"
POLL_S = 0.1


class WorkDirBusy(RuntimeError):
    """Another process kept the work dir's lock for longer than we could wait."""


class WorkDirLock:
    def __init__(self, work_dir: str | Path) -> None:
        self.path = Path(work_dir) / LOCK_NAME
        self.fd: int | None = None

    @property
    def held(self) -> bool:
        return self.fd is not None

    def try_acquire(self) -> bool:
        """Take the lock if nobody holds it; True when we hold it now."""
        if self.fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return True

    def holder(self) -> str:
        """Who wrote the lock last (a pid), for messages."""
        with contextlib.suppress(OSError):
            return self.path.read_text().strip() or "unknown"
        return "unknown"

    async def acquire(self, timeout: float) -> None:
        """Wait up to `timeout` seconds for the lock; WorkDirBusy when it stays taken."""
        deadline = time.monotonic() + timeout
        logged = False
        while not self.try_acquire():
            if time.monotonic() >= deadline:
                raise WorkDirBusy(
                    f"work dir {self.path.parent} is still in use by pid {self.holder()} "
                    f"after {timeout:.0f}s"
                )
            if not logged:
                log.info(
                    "waiting for the previous Lingma binary on this work dir to exit",
                    extra={"holder": self.holder()},
                )
                logged = True
            await asyncio.sleep(POLL_S)

    def release(self) -> None:
        fd, self.fd = self.fd, None
        if fd is not None:
            os.close(fd)  # closing our copy; a binary that inherited it holds it till it exits
