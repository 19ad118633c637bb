"""Shared by supervisor and worker: the restart delay policy for anything that crashed.

The supervisor spaces restarts of a crashed front or worker with it, the worker restarts of its
Lingma binary and its auto-login attempts. 0.5 s doubling to a 30 s cap with +/-20 % jitter
(so accounts that crashed together do not restart in lockstep), reset once a process has
stayed healthy for 60 s. There is no give-up count: a crash-looping account keeps being retried
at the cap, unlike supervisord's FATAL; only the reserved exit codes stop the retries (see
supervisor/handle.py).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Backoff:
    base_s: float = 0.5
    cap_s: float = 30.0
    jitter: float = 0.2
    reset_after_s: float = 60.0
    rng: Callable[[], float] = field(default=random.random, repr=False)
    attempts: int = 0

    def next_delay(self, healthy_for_s: float) -> float:
        """Delay before the next start; `healthy_for_s` is how long the last run was healthy."""
        if healthy_for_s >= self.reset_after_s:
            self.attempts = 0
        # min() on the exponent too, so a week-long crash loop cannot overflow the float.
        raw = min(self.cap_s, self.base_s * 2.0 ** min(self.attempts, 32))
        self.attempts += 1
        spread: float = self.jitter * (2.0 * self.rng() - 1.0)
        return raw * (1.0 + spread)

    def reset(self) -> None:
        self.attempts = 0
