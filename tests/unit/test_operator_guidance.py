"""Unit: what the operator is told to do — status hints, the banner's command, error texts."""

from __future__ import annotations

import os
import sys

import msgspec
import pytest

from front.errors import no_ready_account_message
from protocol.control_socket import ChildStatus, StatusReply
from protocol.vocabulary import ChildKind, ChildState, LoginState
from supervisor.console import cli_command
from supervisor.status_view import render

pytestmark = pytest.mark.unit

S = ChildState


def row(name: str, state: S, login: LoginState, last_exit: str = "") -> ChildStatus:
    return ChildStatus(
        name=name, kind=ChildKind.WORKER, state=state, login=login, last_exit=last_exit
    )


def status(*rows: ChildStatus) -> StatusReply:
    return StatusReply(
        version="1.0", pid=1, uptime_s=5, listen="127.0.0.1:8080", workers=list(rows), fronts=[]
    )


def test_status_says_what_to_do_per_account() -> None:
    text = render(
        status(
            row("acct-a", S.READY, LoginState.LOGGED_IN),
            row("acct-b", S.DEGRADED, LoginState.LOGGED_OUT),
            row("acct-c", S.FATAL, LoginState.UNKNOWN, "exit code 78 (cannot start)"),
            row("acct-d", S.DEGRADED, LoginState.LOGGING_IN),
        )
    )
    assert "acct-b: not logged in - `lingma-gw login acct-b`" in text
    assert "acct-c: last exit: exit code 78 (cannot start)" in text
    assert "acct-c: FATAL - fix the cause" in text
    assert "`lingma-gw restart-worker acct-c`" in text
    assert "acct-a:" not in text and "acct-d:" not in text  # nothing to do for these


def test_status_shows_the_auto_login_attempt() -> None:
    renewing = msgspec.structs.replace(
        row("acct-d", S.DEGRADED, LoginState.LOGGING_IN), login_attempt=2
    )
    pausing = row("acct-e", S.DEGRADED, LoginState.LOGGING_IN)
    lines = render(status(renewing, pausing)).splitlines()
    assert any(line.startswith("acct-d") and "logging in, attempt 2" in line for line in lines)
    assert any(line.startswith("acct-e") and "logging in " in line for line in lines)


def test_all_ready_has_no_hints() -> None:
    text = render(status(row("acct-a", S.READY, LoginState.LOGGED_IN)))
    assert "lingma-gw login" not in text and "restart-worker" not in text


def test_banner_command_is_runnable_from_here(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    command = cli_command()
    assert command.endswith("lingma-gw") and command != "lingma-gw"
    beside = os.path.join(os.path.dirname(sys.executable), "lingma-gw")
    assert not os.path.exists(beside) or os.path.samefile(command, beside)


def test_no_ready_account_message_points_at_the_cli() -> None:
    text = no_ready_account_message("acct-a: not logged in")
    assert text.startswith("no READY account can serve this request (acct-a: not logged in)")
    assert "`lingma-gw status`" in text and "`lingma-gw login NAME`" in text
    assert "list models" in no_ready_account_message(action="list models")
