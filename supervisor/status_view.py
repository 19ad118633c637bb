"""Runs in the `lingma-gw` CLI: renders a StatusReply like `systemctl status`, and its exit code.

Exit codes follow LSB `status` conventions where they exist:
  0  running, every worker and front READY
  1  running but degraded (some account not READY: logging in, cooling down, backoff, FATAL;
     or the usage ledger cannot be written)
  3  not running (no control socket, or nothing listening on it)
  4  status unknown (permission denied, timeout, unexpected reply)
"""

from __future__ import annotations

from protocol.control_socket import ChildStatus, StatusReply
from protocol.usage import LedgerState
from protocol.vocabulary import BinaryState, ChildState, LoginState

EXIT_OK = 0
EXIT_DEGRADED = 1
EXIT_NOT_RUNNING = 3
EXIT_UNKNOWN = 4

_RESET = "\033[0m"
_COLORS = {
    ChildState.READY: "\033[32m",  # green
    ChildState.DEGRADED: "\033[33m",  # yellow
    ChildState.STARTING: "\033[36m",  # cyan
    ChildState.BACKOFF: "\033[33m",
    ChildState.STOPPING: "\033[36m",
    ChildState.EXITED: "\033[90m",  # grey
    ChildState.FATAL: "\033[31m",  # red
}
_BOLD = "\033[1m"

WORKER_COLUMNS = (
    "ACCOUNT", "STATE", "LOGIN", "PID", "BINARY PID", "UPTIME", "RESTARTS",
    "IN-FLIGHT", "SESSIONS", "RSS", "CPU", "MODELS", "BACKEND",
)  # fmt: skip
FRONT_COLUMNS = ("FRONT", "STATE", "PID", "UPTIME", "RESTARTS", "IN-FLIGHT", "RSS", "CPU")


def exit_code(reply: StatusReply) -> int:
    rows = [*reply.workers, *reply.fronts]
    ledger_ok = reply.ledger is not LedgerState.DEGRADED
    if reply.workers and all(row.state == ChildState.READY for row in rows) and ledger_ok:
        return EXIT_OK
    return EXIT_DEGRADED


def human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "K", "M", "G"):
        if value < 1024 or unit == "G":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return f"{value:.1f}G"  # pragma: no cover - the loop always returns


def human_duration(seconds: float) -> str:
    total = int(seconds)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes}m"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def _paint(text: str, state: ChildState, color: bool) -> str:
    return f"{_COLORS[state]}{text}{_RESET}" if color else text


def login_text(row: ChildStatus) -> str:
    """The LOGIN cell: the state, and while auto-login runs which attempt it is on."""
    if row.login is LoginState.LOGGING_IN:
        return f"logging in, attempt {row.login_attempt}" if row.login_attempt else "logging in"
    return row.login.value


def _worker_cells(row: ChildStatus) -> list[str]:
    state = row.state.value + (f" ({row.cooldown_s:.0f}s cooldown)" if row.cooldown_s > 0 else "")
    return [
        row.name, state, login_text(row), _opt(row.pid), _opt(row.binary_pid),
        human_duration(row.uptime_s) if row.pid else "-", str(row.restarts),
        str(row.in_flight), str(row.sessions), human_bytes(row.rss_bytes) if row.pid else "-",
        f"{row.cpu_percent:.1f}%" if row.pid else "-", str(row.models), row.backend or "-",
    ]  # fmt: skip


def _front_cells(row: ChildStatus) -> list[str]:
    return [
        row.name, row.state.value, _opt(row.pid),
        human_duration(row.uptime_s) if row.pid else "-", str(row.restarts), str(row.in_flight),
        human_bytes(row.rss_bytes) if row.pid else "-",
        f"{row.cpu_percent:.1f}%" if row.pid else "-",
    ]  # fmt: skip


def _opt(value: int | None) -> str:
    return str(value) if value else "-"


def _table(
    header: tuple[str, ...], rows: list[ChildStatus], cells: list[list[str]], color: bool
) -> list[str]:
    widths = [max([len(h), *(len(c[i]) for c in cells)]) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    for row, row_cells in zip(rows, cells, strict=True):
        padded = [c.ljust(w) for c, w in zip(row_cells, widths, strict=True)]
        padded[1] = _paint(padded[1], row.state, color)
        lines.append("  ".join(padded).rstrip())
    if color:
        lines[0] = f"{_BOLD}{lines[0]}{_RESET}"
    return lines


def render(reply: StatusReply, color: bool = False) -> str:
    ready = sum(1 for w in reply.workers if w.state == ChildState.READY)
    degraded = exit_code(reply) != EXIT_OK
    dot = "●"
    if color:
        dot = f"{_COLORS[ChildState.DEGRADED if degraded else ChildState.READY]}{dot}{_RESET}"
    summary = "degraded" if degraded else "running"
    lines = [
        f"{dot} lingma-gw {reply.version} - {summary} ({ready}/{len(reply.workers)} accounts "
        f"ready)",
        f"   Main PID: {reply.pid}, up {human_duration(reply.uptime_s)}, "
        f"listening on {reply.listen}",
        "",
    ]
    lines += _table(WORKER_COLUMNS, reply.workers, [_worker_cells(w) for w in reply.workers], color)
    lines.append("")
    lines += _table(FRONT_COLUMNS, reply.fronts, [_front_cells(f) for f in reply.fronts], color)
    if reply.ledger is not LedgerState.OK:
        note = f" ({reply.ledger_note})" if reply.ledger_note else ""
        lines += ["", f"   usage ledger: {reply.ledger.value}{note}"]
    problems = [w for w in reply.workers if w.last_exit and w.state != ChildState.READY]
    if problems:
        lines.append("")
        lines += [f"   {w.name}: last exit: {w.last_exit}" for w in problems]
    hints = [hint for w in reply.workers if (hint := _next_step(w))]
    if hints:
        lines += ["", *hints]
    return "\n".join(lines)


def _next_step(row: ChildStatus) -> str:
    """What an operator does about an account that is not serving."""
    if row.state == ChildState.FATAL:
        return (
            f"   {row.name}: FATAL - fix the cause (last exit above, `journalctl -u lingma-gw`), "
            f"then `lingma-gw restart-worker {row.name}`"
        )
    if row.binary is BinaryState.WAITING_FOR_WORK_DIR:
        return (
            f"   {row.name}: waiting for the previous Lingma binary to leave the work dir "
            "(its pid is in the work dir's .lingma-gw.lock)"
        )
    if row.state != ChildState.READY and row.login in (LoginState.LOGGED_OUT, LoginState.FAILED):
        return (
            f"   {row.name}: not logged in - `lingma-gw login {row.name}` "
            "(starts auto-login, or prints a URL to open)"
        )
    if row.state != ChildState.READY and row.note:
        return f"   {row.name}: {row.note}"
    return ""
