"""Runs in the supervisor: psutil facts (RSS, CPU, descendants) about the processes it owns."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import psutil


@dataclass(frozen=True)
class ProcessFacts:
    rss_bytes: int = 0
    cpu_percent: float = 0.0  # since the previous sample of the same process
    cpu_seconds: float = 0.0  # user + system, lifetime


class FactsSampler:
    """Keeps one psutil.Process per pid so `cpu_percent` measures between two samples."""

    def __init__(self) -> None:
        self._procs: dict[int, psutil.Process] = {}

    def sample(self, pid: int | None) -> ProcessFacts:
        if not pid:
            return ProcessFacts()
        proc = self._procs.get(pid)
        try:
            if proc is None or not proc.is_running():
                proc = self._procs[pid] = psutil.Process(pid)
            with proc.oneshot():
                times = proc.cpu_times()
                return ProcessFacts(
                    rss_bytes=proc.memory_info().rss,
                    cpu_percent=proc.cpu_percent(None),
                    cpu_seconds=times.user + times.system,
                )
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            self._procs.pop(pid, None)
            return ProcessFacts()

    def forget(self, keep: set[int]) -> None:
        for pid in list(self._procs):
            if pid not in keep:
                del self._procs[pid]


def snapshot_descendants(pid: int | None) -> list[psutil.Process]:
    """Everything below `pid` now, so it can be swept if it outlives its parent."""
    if not pid:
        return []
    with contextlib.suppress(psutil.Error):
        return psutil.Process(pid).children(recursive=True)
    return []


def kill_leftovers(procs: list[psutil.Process]) -> int:
    """SIGKILL the processes of an earlier snapshot that still run (is_running checks identity)."""
    killed = 0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            if proc.is_running():
                proc.kill()
                killed += 1
    return killed
