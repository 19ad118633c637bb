"""Runs as `python -m bench [--quick]` (`make bench`): the whole benchmark, table + latest.json."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import psutil
import uvloop

from bench import report, table, thresholds
from bench.loadgen import LoadGenerator
from bench.plan import FULL, QUICK, Plan
from bench.procs import REPO, Owned, descendants, raise_own_fd_limit
from bench.runner import SCENARIOS, Run

FULL_BUDGET_S = 290.0
QUICK_BUDGET_S = 58.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="the ≤ 60 s subset (make bench QUICK=1)"
    )
    parser.add_argument("--out", type=Path, default=report.LATEST, help="where to write the JSON")
    parser.add_argument(
        "--only",
        type=lambda text: frozenset(text.split(",")),
        default=SCENARIOS,
        help=f"comma-separated subset of: {', '.join(sorted(SCENARIOS))}",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the run directory (logs, configs)"
    )
    return parser.parse_args(argv)


def _git_commit() -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        return out.stdout.strip()
    return ""


def meta(plan: Plan, args: argparse.Namespace) -> dict[str, Any]:
    return {
        "command": "make bench QUICK=1" if plan.quick else "make bench",
        "argv": sys.argv[1:],
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": _git_commit(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "aiohttp": aiohttp.__version__,
        "msgspec": msgspec.__version__,
        "uvloop": getattr(uvloop, "__version__", ""),
        "plan": {k: v for k, v in vars(plan).items()},
        "note": "all numbers from one run on one machine; the emulator stands in for Lingma",
    }


def _kill_stragglers() -> None:
    """Anything still below us dies with the run; multiprocessing's resource tracker is left
    alone: it cleans up the pool's semaphores and exits by itself when we do."""
    for child in descendants(os.getpid()):
        with contextlib.suppress(psutil.Error):
            if "resource_tracker" not in " ".join(child.cmdline()):
                child.kill()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    plan = QUICK if args.quick else FULL
    budget = QUICK_BUDGET_S if plan.quick else FULL_BUDGET_S
    soft, hard = raise_own_fd_limit()  # before any child starts: they all inherit it
    root = Path(tempfile.mkdtemp(prefix="lgwb-", dir="/tmp"))  # short: Unix socket paths
    owned = Owned()
    results: dict[str, Any] = {"meta": meta(plan, args)}
    results["meta"]["fd_limit"] = {"soft": soft, "hard": hard}
    started = time.monotonic()
    main_task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    if main_task is not None:
        loop.add_signal_handler(signal.SIGTERM, main_task.cancel)
    bench_run: Run | None = None
    try:
        async with LoadGenerator(plan.loadgen_processes) as load:
            bench_run = Run(plan, root, owned, load, args.only & SCENARIOS)
            await bench_run.guarded("litellm_venv", bench_run.prepare())
            try:
                async with asyncio.timeout(budget):
                    await bench_run.start_all()
                    await bench_run.scenarios()
            except TimeoutError:
                bench_run.errors["budget"] = (
                    f"the run hit its {budget:.0f}s budget; numbers are partial"
                )
            finally:
                bench_run.stop_all()
    finally:
        owned.stop_all()
        _kill_stragglers()
        if args.keep:
            print(f"bench: run directory kept at {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    results.update(bench_run.results if bench_run else {})
    results["scenario_errors"] = bench_run.errors if bench_run else {}
    results["skipped"] = bench_run.skipped if bench_run else {}
    results["meta"]["seconds"] = round(time.monotonic() - started, 1)
    # Other work on the machine shows up as noise in every number: say how busy it was.
    results["meta"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results["ratios"] = report.ratios(results)
    results["targets"] = thresholds.evaluate(results["ratios"])
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        results = uvloop.run(run(args))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("\nbench: interrupted; every process it started has been stopped", file=sys.stderr)
        return 130
    path = report.write(results, args.out)
    print(table.render(results))
    print(f"\nbench: {results['meta']['seconds']}s; wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
