"""Runs as `python -m worker.doctor` (behind `lingma-gw doctor NAME`): probe one account's runtime.

The supervisor's CLI builds the account's WorkerSpec from the config and hands it over on stdin
(it holds the password, so never on the command line). The doctor attaches to the runtime the
account already runs (discovery file + a port that answers `initialize`), or starts the binary
itself once it holds the work dir's lock (worker/workdir_lock.py, §7.5), and stops it again.
It prints one line per question (worker/doctor_probes.py) and writes a redacted transcript of
everything said on the wire (worker/transcript.py) to the file it names.

Exit codes: 0 probed; 1 the runtime could not be reached or started; 78 an unusable spec.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import msgspec

from protocol.specs import WorkerSpec
from protocol.vocabulary import EXIT_CANNOT_START
from worker.binary import LingmaBinary, StartupFailed, work_dir_wait_s
from worker.discovery import machine_token_headers, read_discovery
from worker.doctor_probes import Probes
from worker.doctor_wire import Finding, ProbeWire
from worker.rpc import RpcClosed, RpcConnection, RpcError
from worker.runtime_client import RuntimeClient
from worker.transcript import Transcript
from worker.workdir_lock import WorkDirBusy, WorkDirLock

EXIT_UNREACHABLE = 1
ATTACH_TIMEOUT_S = 5.0


class RuntimeUnreachable(RuntimeError):
    """No runtime answers for this account, and none could be started."""


class DoctorReport(msgspec.Struct, frozen=True, kw_only=True):
    account: str
    runtime: str  # attached | started
    findings: list[Finding]
    transcript: str


async def answers(port: int, work_dir: str) -> bool:
    """Does a runtime on `port` answer `initialize`?"""
    async with aiohttp.ClientSession() as http:
        try:
            conn = await RpcConnection.open(
                http, port, timeout=ATTACH_TIMEOUT_S, headers=machine_token_headers(work_dir)
            )
        except RpcClosed:
            return False
        try:
            await conn.call("initialize", {}, ATTACH_TIMEOUT_S)
        except (RpcError, RpcClosed, TimeoutError):
            return False
        finally:
            await conn.close()
    return True


@contextlib.asynccontextmanager
async def runtime(spec: WorkerSpec, transcript: Transcript) -> AsyncIterator[tuple[int, str]]:
    """(port, how): the account's running runtime, else one started for the probe."""
    endpoint = read_discovery(spec.work_dir)
    if endpoint is not None and await answers(endpoint.port, spec.work_dir):
        transcript.note(f"attached to the running runtime (pid {endpoint.pid})")
        yield endpoint.port, "attached"
        return
    lock = WorkDirLock(spec.work_dir)
    try:
        await lock.acquire(min(work_dir_wait_s(spec), spec.startup_timeout_s))
    except WorkDirBusy as exc:
        raise RuntimeUnreachable(f"{exc}, and no runtime answers on its port") from None
    binary = LingmaBinary(spec)
    client = RuntimeClient(Path(spec.work_dir), rpc_timeout=spec.rpc_timeout_s, max_idle=1)
    try:
        try:
            await binary.spawn(lock.fd)
            await binary.wait_ready(client, spec.startup_timeout_s)
        except (StartupFailed, OSError) as exc:
            raise RuntimeUnreachable(f"the runtime did not start: {exc}") from None
        finally:
            await client.close()  # the probes use connections of their own
        transcript.note(f"started the binary (pid {binary.pid}) for the probe")
        yield client.port, "started"
    finally:
        await binary.stop(grace=5.0)
        lock.release()


async def probe(spec: WorkerSpec, *, chat: bool, transcript: Transcript) -> tuple[str, Probes]:
    wire = ProbeWire(transcript)
    async with runtime(spec, transcript) as (port, how), aiohttp.ClientSession() as http:
        probes = Probes(spec, port, http, wire)
        main = await probes.handshake()
        await probes.account(main)
        await probes.machine_token()
        if chat and not probes.logged_in:
            probes.found("chat", "skipped", "the account is not logged in")
        elif chat:
            main, observer = await probes.clients(main)
            session = await probes.acp(main, observer)
            await probes.legacy(main)
            await probes.cancel(main, acp=bool(session))
            probes.report_strays()
            await probes.cleanup(main)
        return how, probes


def transcript_path(spec: WorkerSpec, given: str) -> Path:
    if given:
        return Path(given)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path.cwd() / f"lingma-doctor-{spec.name}-{stamp}.jsonl"


def render(findings: list[Finding]) -> str:
    width = max((len(f.question) for f in findings), default=10)
    return "\n".join(f"  {f.question:<{width}}  {f.answer}  ({f.evidence})" for f in findings)


async def main_async(spec: WorkerSpec, args: argparse.Namespace) -> int:
    transcript = Transcript()
    path = transcript_path(spec, args.transcript)
    try:
        how, probes = await probe(spec, chat=args.chat, transcript=transcript)
    except (RuntimeUnreachable, RpcClosed, RpcError, TimeoutError) as exc:
        transcript.note(f"failed: {exc}")
        transcript.write(path)
        print(f"lingma-gw doctor {spec.name}: {exc}", file=sys.stderr)
        print(f"transcript: {path}", file=sys.stderr)
        return EXIT_UNREACHABLE
    transcript.write(path)
    if args.json:
        report = DoctorReport(
            account=spec.name, runtime=how, findings=probes.findings, transcript=str(path)
        )
        print(msgspec.json.encode(report).decode())
    else:
        print(f"lingma-gw doctor {spec.name}: {how} the runtime at {spec.work_dir}")
        print(render(probes.findings))
        print(f"transcript (redacted): {path}")
    return 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m worker.doctor", description=__doc__)
    parser.add_argument("--spec", required=True, help="a JSON WorkerSpec file, or - for stdin")
    parser.add_argument(
        "--chat", action="store_true", help="also one ACP ask, one legacy ask, one cancel"
    )
    parser.add_argument("--transcript", default="", help="where to write the redacted transcript")
    parser.add_argument("--json", action="store_true", help="machine-readable findings")
    args = parser.parse_args(argv)
    try:
        raw = sys.stdin.buffer.read() if args.spec == "-" else Path(args.spec).read_bytes()
        spec = msgspec.json.decode(raw, type=WorkerSpec)
    except (OSError, msgspec.DecodeError) as exc:
        print(f"lingma-gw doctor: unusable worker spec: {exc}", file=sys.stderr)
        sys.exit(EXIT_CANNOT_START)
    sys.exit(asyncio.run(main_async(spec, args)))


if __name__ == "__main__":
    main()
