"""Runs as the `lingma-emulator` command: the real runtime's CLI (start, version, status).

    lingma-emulator start --workDir D --socketPort N --httpPort M [--copyDataDir OLD]
    lingma-emulator version
    lingma-emulator status -o json --workDir D
    lingma-emulator cloud --port N [--workDir D ...]   (the cloud API stand-in alone, §14.15)

Unknown flags (--transportType, --endpoint, --startupId, ...) are accepted and ignored, like
the real binary. Port 0 picks a free port; the chosen one is published in `.info.json`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import setproctitle
import uvloop

from emulator.cloud_main import serve_cloud
from emulator.cloud_settings import cloud_knobs_from_env
from emulator.server import StartOptions, serve
from emulator.settings import EMULATOR_NAME, SettingsError, knobs_from_env
from emulator.store import WorkDir

DEFAULT_WORK_DIR = Path.home() / ".lingma-emulator"  # never the real ~/.lingma
DEFAULT_SOCKET_PORT = 37010
DEFAULT_HTTP_PORT = 37510


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=EMULATOR_NAME,
        description="EMULATOR of the Tongyi Lingma runtime (for tests and demos)",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("start", help="run the emulated runtime in the foreground")
    _work_dir_flag(start)
    start.add_argument("--socketPort", type=int, default=DEFAULT_SOCKET_PORT)
    start.add_argument("--httpPort", type=int, default=DEFAULT_HTTP_PORT)
    start.add_argument("--copyDataDir", type=Path, default=None)
    for ignored in ("--transportType", "--endpoint", "--startupId"):
        start.add_argument(ignored, help=argparse.SUPPRESS)
    commands.add_parser("version", help="print the emulated runtime version")
    status = commands.add_parser("status", help="login state of a work dir")
    _work_dir_flag(status)
    status.add_argument("-o", "--output", choices=["json", "text"], default="text")
    cloud = commands.add_parser("cloud", help="run only the cloud API stand-in")
    cloud.add_argument("--port", type=int, default=0, help="127.0.0.1 port (0 = any free one)")
    cloud.add_argument(
        "--workDir",
        "--workdir",
        dest="workDirs",
        type=Path,
        action="append",
        default=[],
        help="accept the login of this work dir (repeatable)",
    )
    return parser


def _work_dir_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workDir", "--workdir", dest="workDir", type=Path, default=DEFAULT_WORK_DIR
    )


def status_payload(work_dir: Path, version: str) -> dict[str, object]:
    """What `Lingma status -o json` prints: {logged_in, version, username, user_type}."""
    workdir = WorkDir(work_dir)
    user = workdir.read_user() if workdir.id_path.exists() else None
    return {
        "logged_in": user is not None,
        "version": version,
        "username": user.name if user else "",
        "user_type": user.user_type if user else "",
        "emulator": True,
    }


def main(argv: Sequence[str] | None = None) -> None:
    args, unknown = build_parser().parse_known_args(argv)
    try:
        knobs = knobs_from_env()
        cloud = cloud_knobs_from_env()
    except SettingsError as exc:
        print(f"{EMULATOR_NAME}: {exc}", file=sys.stderr)
        sys.exit(2)
    if unknown:
        print(f"{EMULATOR_NAME}: ignoring unknown arguments {unknown}", file=sys.stderr)
    if args.command == "version":
        print(f"version: {knobs.version} ({EMULATOR_NAME}, an EMULATOR of the Lingma runtime)")
        return
    if args.command == "status":
        payload = status_payload(args.workDir, knobs.version)
        if args.output == "json":
            print(json.dumps(payload))
        else:
            for key, value in payload.items():
                print(f"{key}: {value}")
        return
    if args.command == "cloud":
        setproctitle.setproctitle(f"{EMULATOR_NAME}: cloud stand-in")
        sys.exit(uvloop.run(serve_cloud(args.port, args.workDirs, knobs, cloud)))
    # Which runtime this is, in ps/top: the work dir names the account it serves.
    port = f" (port {args.socketPort})" if args.socketPort else ""
    setproctitle.setproctitle(f"{EMULATOR_NAME}: {args.workDir}{port}")
    options = StartOptions(
        work_dir=args.workDir,
        socket_port=args.socketPort,
        http_port=args.httpPort,
        copy_data_dir=args.copyDataDir,
    )
    sys.exit(uvloop.run(serve(options, knobs, cloud)))
