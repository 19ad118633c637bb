"""Runs in the supervisor: the sd_notify protocol (READY, WATCHDOG, STOPPING, STATUS) over stdlib.

systemd passes `NOTIFY_SOCKET` (a path, or '@name' for an abstract socket) and, with
`WatchdogSec=`, `WATCHDOG_USEC` (+ `WATCHDOG_PID`). Without them every call is a no-op, so the
same code runs under systemd, in a terminal and in tests. The variables are removed from our
environment so spawned children cannot notify on our behalf (`NotifyAccess=main` would drop
their messages anyway).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import MutableMapping

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, environ: MutableMapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.address = _address(env.pop("NOTIFY_SOCKET", ""))
        self.watchdog_interval_s = _watchdog_interval(
            env.pop("WATCHDOG_USEC", ""), env.pop("WATCHDOG_PID", "")
        )
        self._last_watchdog = 0.0
        self._sock: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *fields: str) -> bool:
        """Send one datagram of 'KEY=VALUE' lines; False (and a log line) when not delivered.

        The socket is non-blocking: this runs on the supervisor's event loop, and a receiver
        that stops reading fills its queue (net.unix.max_dgram_qlen, often 10), after which a
        blocking sendto would freeze the whole supervisor, shutdown included. A dropped STATUS
        is harmless; systemd reads its notify socket promptly, so READY/STOPPING get through.
        """
        if self.address is None:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(
                    socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
                )
            self._sock.sendto("\n".join(fields).encode(), self.address)
        except BlockingIOError:
            log.warning("sd_notify dropped %s: the notify socket's queue is full", fields[0])
            return False
        except OSError as exc:
            log.debug("sd_notify failed: %s", exc)
            return False
        return True

    def ready(self, status: str = "") -> bool:
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def reloading(self) -> bool:
        monotonic_us = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={monotonic_us}")

    def stopping(self, status: str = "") -> bool:
        return self.notify("STOPPING=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")

    def watchdog_due(self, now: float | None = None) -> bool:
        if self.watchdog_interval_s is None:
            return False
        current = time.monotonic() if now is None else now
        return current - self._last_watchdog >= self.watchdog_interval_s

    def watchdog(self, now: float | None = None) -> bool:
        """Pet the watchdog if half of WATCHDOG_USEC has passed since the last time."""
        if not self.watchdog_due(now):
            return False
        self._last_watchdog = time.monotonic() if now is None else now
        return self.notify("WATCHDOG=1")

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None


def _address(value: str) -> str | None:
    if not value:
        return None
    if value.startswith("@"):  # abstract namespace: a leading NUL byte instead of '@'
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    log.warning("ignoring NOTIFY_SOCKET=%r: not a path or abstract socket", value)
    return None


def _watchdog_interval(usec: str, pid: str) -> float | None:
    """Half the watchdog timeout, as sd_watchdog_enabled(3) recommends; None when off."""
    if not usec:
        return None
    if pid and pid != str(os.getpid()):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 2_000_000 if value > 0 else None
