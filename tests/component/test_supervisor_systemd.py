"""Component: sd_notify datagrams to a real NOTIFY_SOCKET (path and abstract namespace)."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from supervisor.systemd import Notifier

pytestmark = pytest.mark.component


@pytest.fixture(params=["path", "abstract"])
def notify_socket(
    request: pytest.FixtureRequest, sock_dir: Path
) -> Iterator[tuple[str, socket.socket]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if request.param == "path":
        address = str(sock_dir / "notify")
        sock.bind(address)
        env_value = address
    else:
        name = f"lgw-test-{os.getpid()}-{sock_dir.name}"
        sock.bind("\0" + name)
        env_value = "@" + name
    sock.settimeout(2)
    try:
        yield env_value, sock
    finally:
        sock.close()


def receive(sock: socket.socket) -> list[str]:
    return sock.recv(4096).decode().split("\n")


def test_ready_status_watchdog_stopping(notify_socket: tuple[str, socket.socket]) -> None:
    value, sock = notify_socket
    env = {"NOTIFY_SOCKET": value, "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}
    notifier = Notifier(env)
    assert env == {}  # consumed: children cannot notify on our behalf
    assert notifier.enabled and notifier.watchdog_interval_s == 15.0
    try:
        assert notifier.ready("2/2 accounts ready")
        assert receive(sock) == ["READY=1", "STATUS=2/2 accounts ready"]
        assert notifier.watchdog(now=100.0)
        assert receive(sock) == ["WATCHDOG=1"]
        assert not notifier.watchdog(now=110.0)  # less than half the timeout later
        assert notifier.watchdog(now=115.0)
        assert receive(sock) == ["WATCHDOG=1"]
        assert notifier.reloading()
        reloading = receive(sock)
        assert reloading[0] == "RELOADING=1" and reloading[1].startswith("MONOTONIC_USEC=")
        assert notifier.stopping("draining")
        assert receive(sock) == ["STOPPING=1", "STATUS=draining"]
    finally:
        notifier.close()


def test_without_systemd_everything_is_a_no_op() -> None:
    notifier = Notifier({})
    assert not notifier.enabled
    assert not notifier.ready() and not notifier.watchdog() and not notifier.stopping()


def test_watchdog_for_another_pid_is_ignored(sock_dir: Path) -> None:
    env = {"NOTIFY_SOCKET": str(sock_dir / "n"), "WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"}
    assert Notifier(env).watchdog_interval_s is None


def test_unreachable_socket_does_not_raise(sock_dir: Path) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(sock_dir / "gone")})
    try:
        assert notifier.enabled and not notifier.ready()
    finally:
        notifier.close()


def test_a_reader_that_stops_reading_never_blocks_the_sender(
    notify_socket: tuple[str, socket.socket],
) -> None:
    """A full datagram queue drops the message instead of freezing the supervisor's loop."""
    value, sock = notify_socket
    notifier = Notifier({"NOTIFY_SOCKET": value})
    try:
        sent = [notifier.status(f"update {n}") for n in range(2000)]  # far beyond max_dgram_qlen
        assert sent[0] and not all(sent)
        assert receive(sock) == ["STATUS=update 0"]
        assert notifier.stopping("draining")  # one slot free again: delivered
    finally:
        notifier.close()
