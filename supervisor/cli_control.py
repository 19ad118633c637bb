"""Runs in the `lingma-gw` command: the exit codes, and one request to the running supervisor.

Shared by the subcommands in supervisor/cli.py and supervisor/keys_cli.py. The control socket is
found as for `status` (--socket, $LINGMA_GW_RUNTIME_DIR, --config's runtime_dir,
/run/lingma-gw); a supervisor that is not running or does not answer is an LSB exit code, a
refusal is printed with its code. Imports stay light at module level (see supervisor/cli.py).
"""

# ruff: noqa: PLC0415 - deliberate function-level imports, see the module docstring
from __future__ import annotations

import argparse
import os
import sys
from typing import Any

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_NOT_RUNNING = 3
EXIT_UNKNOWN = 4
EXIT_BAD_CONFIG = 78


def load(path: str) -> Any:
    """The config at `path`, or None after printing why it is bad."""
    from supervisor.config import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"lingma-gw: bad config: {exc}", file=sys.stderr)
        return None


def control_socket(args: argparse.Namespace) -> str:
    from supervisor.control import socket_path

    runtime_dir = None
    if args.config and not args.socket:
        config = load(args.config)
        if config is None:
            raise SystemExit(EXIT_BAD_CONFIG)
        runtime_dir = config.server.runtime_dir
    return socket_path(args.socket, runtime_dir, dict(os.environ))


def ask(args: argparse.Namespace, message: Any) -> Any:
    """Send one request; on failure print why and raise SystemExit with the LSB code."""
    import asyncio

    from supervisor.control import ControlUnavailable, Unreachable, request

    path = control_socket(args)
    try:
        return asyncio.run(request(path, message, timeout=args.timeout))
    except ControlUnavailable as exc:
        print(f"lingma-gw: {exc}", file=sys.stderr)
        not_running = exc.kind in (Unreachable.MISSING, Unreachable.REFUSED)
        raise SystemExit(EXIT_NOT_RUNNING if not_running else EXIT_UNKNOWN) from None


def refused(reply: Any) -> int:
    print(f"lingma-gw: {reply.code.value}: {reply.message}", file=sys.stderr)
    return EXIT_REFUSED
