"""Runs in the `lingma-gw` command: `keys add|list|disable|enable|remove` and `usage`.

`keys add` makes the secret here, sends only its SHA-256 to the supervisor, and prints the
secret exactly once: alone on stdout (so `> alice.key` captures it), the note on stderr.
Every subcommand talks to the running supervisor over the control socket, found the same way
as for `status` (--socket, $LINGMA_GW_RUNTIME_DIR, --config's runtime_dir, /run/lingma-gw).
"""

from __future__ import annotations

import argparse
import datetime as dt
import secrets
import sys
from typing import Any

import msgspec

from protocol.keys import KeyAction, KeyInfo, KeyLimits, KeysReply, KeysRequest, secret_digest
from protocol.usage import UsageGrouping, UsageReply, UsageRequest, parse_since
from supervisor.cli_control import EXIT_OK, ask, refused
from supervisor.keyconfig import parse_expiry

SECRET_PREFIX = "sk-lgw-"  # noqa: S105 - a prefix, not a secret


def add_parsers(sub: Any, control: argparse.ArgumentParser) -> None:
    keys = sub.add_parser("keys", help="named API keys: add, list, disable, enable, remove")
    actions = keys.add_subparsers(dest="key_action", metavar="ACTION", required=True)
    add = actions.add_parser("add", parents=[control], help="make a key; prints its secret once")
    add.add_argument("name", metavar="NAME")
    add.add_argument(
        "--models", action="append", default=[], metavar="GLOB[,GLOB]",
        help="models the key may use (globs, repeat or comma-separate); default: all",
    )  # fmt: skip
    add.add_argument("--rpm", type=_count, default=0, metavar="N", help="requests per minute")
    add.add_argument(
        "--tokens-per-day", type=_count, default=0, metavar="N", help="tokens per UTC day"
    )
    add.add_argument(
        "--max-concurrent", type=_count, default=0, metavar="N", help="requests at once"
    )
    add.add_argument(
        "--expires", type=_expiry, default=0.0, metavar="DATE",
        help="2026-01-31 (00:00 UTC) or an ISO date-time",
    )  # fmt: skip
    add.set_defaults(handler=cmd_keys_add)
    listing = actions.add_parser("list", parents=[control], help="every key, its limits and use")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(handler=cmd_keys_list)
    for action, text in (
        (KeyAction.DISABLE, "refuse a key (401) until enabled again"),
        (KeyAction.ENABLE, "accept a disabled key again"),
        (KeyAction.REMOVE, "delete a key made with `keys add`"),
    ):
        command = actions.add_parser(action.value, parents=[control], help=text)
        command.add_argument("name", metavar="NAME")
        command.set_defaults(handler=cmd_keys_change, action=action)

    usage = sub.add_parser("usage", parents=[control], help="requests and tokens from the ledger")
    usage.add_argument("--by", choices=[g.value for g in UsageGrouping], default="key")
    usage.add_argument("--since", type=_since, default=86400.0, metavar="DURATION",
                       help="how far back: 24h (default), 7d, 90m, 30s")  # fmt: skip
    usage.add_argument("--json", action="store_true", help="machine-readable output")
    usage.set_defaults(handler=cmd_usage)


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("expected 0 (no limit) or a positive number")
    return value


def _expiry(text: str) -> float:
    try:
        return parse_expiry(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _since(text: str) -> float:
    try:
        return parse_since(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _globs(values: list[str]) -> list[str]:
    return [glob.strip() for value in values for glob in value.split(",") if glob.strip()]


# --------------------------------------------------------------------------- keys


def cmd_keys_add(args: argparse.Namespace) -> int:
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    limits = KeyLimits(
        models=_globs(args.models),
        rpm=args.rpm,
        tokens_per_day=args.tokens_per_day,
        max_concurrent=args.max_concurrent,
        expires_at=args.expires,
    )
    request = KeysRequest(
        action=KeyAction.ADD, name=args.name, sha256=secret_digest(secret), limits=limits
    )
    reply = ask(args, request)
    if not isinstance(reply, KeysReply):
        return int(refused(reply))
    print(secret)
    print(
        f"lingma-gw: {reply.message} ({describe_limits(limits)}). The secret above is shown "
        "only this once: store it now.",
        file=sys.stderr,
    )
    return EXIT_OK


def cmd_keys_change(args: argparse.Namespace) -> int:
    reply = ask(args, KeysRequest(action=args.action, name=args.name))
    if not isinstance(reply, KeysReply):
        return int(refused(reply))
    print(reply.message)
    return EXIT_OK


def cmd_keys_list(args: argparse.Namespace) -> int:
    reply = ask(args, KeysRequest(action=KeyAction.LIST))
    if not isinstance(reply, KeysReply):
        return int(refused(reply))
    if args.json:
        print(msgspec.json.format(msgspec.json.encode(reply.keys), indent=2).decode())
    else:
        print(render_keys(reply.keys))
    return EXIT_OK


def describe_limits(limits: KeyLimits) -> str:
    parts = [f"models {', '.join(limits.models)}"] if limits.models else ["all models"]
    for value, label in (
        (limits.rpm, "rpm"),
        (limits.tokens_per_day, "tokens/day"),
        (limits.max_concurrent, "concurrent"),
    ):
        if value:
            parts.append(f"{value} {label}")
    if limits.expires_at:
        parts.append(f"expires {_when(limits.expires_at)}")
    return ", ".join(parts)


def _when(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


KEY_COLUMNS = (
    "NAME", "SOURCE", "STATE", "MODELS", "RPM", "TOKENS/DAY", "CONCURRENT", "EXPIRES",
    "REQUESTS TODAY", "TOKENS TODAY",
)  # fmt: skip


def render_keys(keys: list[KeyInfo]) -> str:
    if not keys:
        return "no API keys: /v1/* is open to anyone who can connect"
    rows = [
        [
            k.name, k.source.value, k.state.value, ",".join(k.limits.models) or "*",
            _limit(k.limits.rpm), _limit(k.limits.tokens_per_day), _limit(k.limits.max_concurrent),
            _when(k.limits.expires_at) if k.limits.expires_at else "-",
            str(k.requests_today), str(k.tokens_today),
        ]
        for k in keys
    ]  # fmt: skip
    return table(KEY_COLUMNS, rows)


def _limit(value: int) -> str:
    return str(value) if value else "-"


def table(header: tuple[str, ...], rows: list[list[str]]) -> str:
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(header)]
    lines = [header, *rows]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


# --------------------------------------------------------------------------- usage


def cmd_usage(args: argparse.Namespace) -> int:
    reply = ask(args, UsageRequest(by=UsageGrouping(args.by), since_s=args.since))
    if not isinstance(reply, UsageReply):
        return int(refused(reply))
    if args.json:
        print(msgspec.json.format(msgspec.json.encode(reply), indent=2).decode())
    else:
        print(render_usage(reply))
    return EXIT_OK


def render_usage(reply: UsageReply) -> str:
    header = (
        reply.by.value.upper(), "REQUESTS", "ERRORS", "LIMITED", "PROMPT TOKENS",
        "COMPLETION TOKENS", "AVG LATENCY", "AVG TTFT", "SESSION REUSE",
    )  # fmt: skip
    rows = [
        [
            g.name, str(g.requests), str(g.errors), str(g.limited), str(g.prompt_tokens),
            str(g.completion_tokens), f"{g.avg_latency_ms:.0f}ms",
            f"{g.avg_ttft_ms:.0f}ms" if g.avg_ttft_ms is not None else "-",
            f"{g.session_reuse_rate:.0%}",
        ]
        for g in reply.groups
    ]  # fmt: skip
    lines = [f"usage over the last {_duration(reply.since_s)}, by {reply.by.value}"]
    lines.append(table(header, rows) if rows else "no requests recorded in that time")
    if reply.ledger.value != "ok":
        lines.append(f"ledger: {reply.ledger.value} {reply.ledger_note}".rstrip())
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
