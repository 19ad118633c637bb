"""Shared by every child process: process-group and parent-death guards.

Each front, worker and Lingma binary runs in its own process group (so the supervisor can
TERM/KILL the whole group) and asks the kernel to SIGKILL it when its parent dies (so a
SIGKILLed supervisor or worker never leaves orphans behind).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def set_parent_death_signal(sig: int = signal.SIGKILL) -> None:
    """Linux only: deliver `sig` to this process when the thread that forked it exits."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")


def isolate_child(expected_parent: int | None = None) -> None:
    """Become a process-group leader with a parent-death guard.

    Safe to call as a subprocess `preexec_fn` (async-signal-safe enough: no locks, no
    allocation-heavy work). If the parent already died before the guard was armed, exit at once.
    """
    # Already a session leader (start_new_session): keep that group.
    with contextlib.suppress(PermissionError):
        os.setpgid(0, 0)
    set_parent_death_signal(signal.SIGKILL)
    if expected_parent is not None and os.getppid() != expected_parent:
        os._exit(1)
