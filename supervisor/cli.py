"""Runs in the `lingma-gw` command: argument parsing and the subcommands.

Imports stay light at module level: spawned children import this module as their `__main__`
stand-in (multiprocessing's spawn start method re-imports the parent's main script), so the
heavy supervisor modules are imported inside the subcommands that need them.

Exit codes: 0 success; 1 the supervisor refused the request (or `status`: degraded, or
`serve`: another instance already runs on that runtime dir, or `doctor`: an unknown account,
an unreachable runtime, or with `--cloud` a step that failed); 2 unusable arguments;
3 not running; 4 status unknown (permission denied, timeout, bad reply); 78 bad config
(EX_CONFIG, from `serve` and `check-config`; also `serve` when its runtime/state directory is
unusable or no front can listen at all);
130 a forced stop (second Ctrl-C).
"""

# ruff: noqa: PLC0415 - deliberate function-level imports, see the module docstring
from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from supervisor import keys_cli
from supervisor.cli_control import (
    EXIT_BAD_CONFIG,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_UNKNOWN,
    EXIT_USAGE,
    ask,
    load,
    refused,
)

# Run by module name: the supervisor never imports worker code.
DOCTOR_MODULE = "worker.doctor"  # the account's runtime
CLOUD_PROBE_MODULE = "worker.cloud.probe"  # the account's cloud API


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return 2
    result: int = args.handler(args)
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lingma-gw",
        description="OpenAI/Anthropic-compatible gateway over Tongyi Lingma accounts.",
    )
    parser.add_argument("--version", action="version", version=f"lingma-gw {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the gateway in the foreground (systemd ExecStart)")
    serve.add_argument("--config", required=True, metavar="FILE", help="the TOML config file")
    serve.set_defaults(handler=cmd_serve)

    check = sub.add_parser("check-config", help="validate a config file and exit")
    check.add_argument("--config", required=True, metavar="FILE")
    check.set_defaults(handler=cmd_check_config)

    control = argparse.ArgumentParser(add_help=False)
    control.add_argument("--socket", metavar="PATH", help="the control socket")
    control.add_argument("--config", metavar="FILE", help="find the socket via this config")
    control.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS")

    status = sub.add_parser("status", parents=[control], help="show every worker and front")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(handler=cmd_status)
    reload = sub.add_parser("reload", parents=[control], help="re-read the config (like SIGHUP)")
    reload.set_defaults(handler=cmd_reload)
    doctor = sub.add_parser(
        "doctor",
        help="probe one account's Lingma runtime (redacted transcript), or its cloud API",
    )
    doctor.add_argument("name", metavar="NAME", help="the account name")
    doctor.add_argument("--config", required=True, metavar="FILE", help="the TOML config file")
    doctor.add_argument(
        "--cloud", action="store_true", help="probe the cloud API (model list, --chat: one chat)"
    )
    doctor.add_argument(
        "--chat",
        action="store_true",
        help="also chat: one tiny ACP ask, one legacy ask and one cancel (--cloud: one chat)",
    )
    doctor.add_argument(
        "--transcript", metavar="PATH", default="", help="transcript file (runtime probe)"
    )
    doctor.add_argument("--json", action="store_true", help="machine-readable findings")
    doctor.set_defaults(handler=cmd_doctor)

    for name, handler, text in (
        ("restart-worker", cmd_restart_worker, "restart one account's worker, clearing cooldown"),
        ("login", cmd_login, "start the login of one account (auto-login or a manual URL)"),
        ("export-session", cmd_export_session, "print one account's session bundle (base64)"),
    ):
        command = sub.add_parser(name, parents=[control], help=text)
        command.add_argument("name", metavar="NAME", help="the account name")
        command.set_defaults(handler=handler)
    keys_cli.add_parsers(sub, control)
    return parser


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("lingma-gw")
    except metadata.PackageNotFoundError:  # pragma: no cover
        return "0+unknown"


# --------------------------------------------------------------------------- serve & config


def cmd_check_config(args: argparse.Namespace) -> int:
    from supervisor.config_report import config_warnings, describe

    config = load(args.config)
    if config is None:
        return EXIT_BAD_CONFIG
    summary = describe(config)
    names = ", ".join(f"{a['name']} ({a['backend']})" for a in summary["accounts"])
    print(f"{args.config}: OK")
    print(f"  listen {summary['listen']} with {summary['fronts']} front(s), accounts: {names}")
    print(f"  runtime_dir {summary['runtime_dir']}, state_dir {summary['state_dir']}")
    print(
        f"  keys: {len(summary['keys'])} named, {summary['api_keys']} in api_keys; "
        f"usage ledger {summary['usage_database']}"
    )
    for warning in config_warnings(config):
        print(f"  warning: {warning}")
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    import logging

    import uvloop

    from protocol.logs import configure_logging
    from supervisor.child_entry import set_title
    from supervisor.config_report import config_warnings
    from supervisor.console import Console
    from supervisor.envconfig import SECRET_VARIABLES
    from supervisor.spawn import SUPERVISOR_TITLE
    from supervisor.supervisor import AlreadyRunning, CannotStart, Supervisor
    from supervisor.systemd import Notifier

    environ = dict(os.environ)  # kept for reloads, before secrets leave our environment
    config = load(args.config)
    if config is None:
        return EXIT_BAD_CONFIG
    os.umask(0o077)  # state dirs, sockets and logs of accounts are private to the service
    set_title(SUPERVISOR_TITLE)
    configure_logging("supervisor", config.server.log_level)
    for warning in config_warnings(config):
        logging.getLogger("supervisor").warning("%s", warning)
    for variable in [*SECRET_VARIABLES, *(key.secret_env for key in config.keys)]:
        os.environ.pop(variable, None)  # children get their secrets from their spec only
    supervisor = Supervisor(
        config,
        os.path.abspath(args.config),
        environ,
        Notifier(),
        Console(config.server.progress),
    )
    try:
        result: int = uvloop.run(supervisor.serve())
    except AlreadyRunning as exc:
        print(f"lingma-gw: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except CannotStart as exc:
        print(f"lingma-gw: {exc}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    return result


def cmd_doctor(args: argparse.Namespace) -> int:
    """The account's WorkerSpec, from the config, on the probe's stdin (it holds secrets).

    Without --cloud the runtime probe (worker/doctor.py) runs; with it the cloud probe
    (worker/cloud/probe.py), which finds the base URL as the account's worker does.
    """
    import subprocess

    import msgspec

    from supervisor.specs import worker_spec

    config = load(args.config)
    if config is None:
        return EXIT_BAD_CONFIG
    account = next((a for a in config.accounts if a.name == args.name), None)
    if account is None:
        names = ", ".join(a.name for a in config.accounts)
        print(
            f"lingma-gw: no account {args.name!r} in {args.config} (have: {names})", file=sys.stderr
        )
        return EXIT_REFUSED
    if args.cloud and args.transcript:
        print("lingma-gw: --transcript goes with the runtime probe, not --cloud", file=sys.stderr)
        return EXIT_USAGE
    spec = worker_spec(config, account, socket_path="")
    module = CLOUD_PROBE_MODULE if args.cloud else DOCTOR_MODULE
    command = [sys.executable, "-m", module, "--spec", "-", *doctor_flags(args)]
    done = subprocess.run(command, input=msgspec.json.encode(spec), check=False)
    return done.returncode


def doctor_flags(args: argparse.Namespace) -> list[str]:
    """The probe's own options, passed through (add new probe switches here)."""
    flags = ["--chat"] if args.chat else []
    if args.transcript:
        flags += ["--transcript", args.transcript]
    if args.json:
        flags.append("--json")
    return flags


# --------------------------------------------------------------------------- control commands


def cmd_status(args: argparse.Namespace) -> int:
    import msgspec

    from protocol.control_socket import ErrorReply, StatusReply, StatusRequest
    from supervisor import status_view

    try:
        reply = ask(args, StatusRequest())
    except SystemExit as exit_:
        if args.json:
            print('{"running": false}')
        raise exit_ from None
    if isinstance(reply, ErrorReply):
        return refused(reply)
    if not isinstance(reply, StatusReply):
        print(f"lingma-gw: unexpected reply {type(reply).__name__}", file=sys.stderr)
        return EXIT_UNKNOWN
    if args.json:
        print(msgspec.json.format(msgspec.json.encode(reply), indent=2).decode())
    else:
        print(status_view.render(reply, color=sys.stdout.isatty() and not os.getenv("NO_COLOR")))
    return status_view.exit_code(reply)


def _simple(args: argparse.Namespace, message: Any) -> int:
    from protocol.control_socket import OkReply

    reply = ask(args, message)
    if not isinstance(reply, OkReply):
        return refused(reply)
    print(reply.message)
    return EXIT_OK


def cmd_reload(args: argparse.Namespace) -> int:
    from protocol.control_socket import ReloadRequest

    return _simple(args, ReloadRequest())


def cmd_restart_worker(args: argparse.Namespace) -> int:
    from protocol.control_socket import RestartWorkerRequest

    return _simple(args, RestartWorkerRequest(name=args.name))


def cmd_login(args: argparse.Namespace) -> int:
    from protocol.control_socket import LoginRequest, OkReply

    reply = ask(args, LoginRequest(name=args.name))
    if not isinstance(reply, OkReply):
        return refused(reply)
    data = reply.data
    print(f"{args.name}: login {data.get('login')}, auto-login {data.get('auto_login')}")
    if data.get("url"):
        print(f"open this URL in a browser to log in:\n{data['url']}")
    return EXIT_OK


def cmd_export_session(args: argparse.Namespace) -> int:
    from protocol.control_socket import ExportLoginBundleRequest, OkReply

    reply = ask(args, ExportLoginBundleRequest(name=args.name))
    if not isinstance(reply, OkReply):
        return refused(reply)
    # The bundle alone on stdout so `> bundle.b64` captures exactly it; the note to stderr.
    print(reply.data.get("bundle_b64", ""))
    print(f"lingma-gw: {reply.message}", file=sys.stderr)
    return EXIT_OK
