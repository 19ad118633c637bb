"""Auto-login never disables an account (issue 14 item 11): only an explicit page error stops
the retries, timeouts and errors are retried with backoff, and the loop's outcome is returned."""

from __future__ import annotations

import pytest

from protocol.backoff import Backoff
from worker.autologin import LoginOutcome
from worker.login import run_attempts

pytestmark = pytest.mark.unit


async def run(
    script: list[LoginOutcome], attempts: int
) -> tuple[LoginOutcome, list[int], list[float]]:
    tried: list[int] = []
    slept: list[float] = []

    async def attempt(number: int) -> LoginOutcome:
        tried.append(number)
        return script[number - 1]

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    backoff = Backoff(base_s=5.0, cap_s=120.0, rng=lambda: 0.5)  # no jitter
    outcome = await run_attempts(attempt, attempts=attempts, backoff=backoff, sleep=sleep)
    return outcome, tried, slept


async def test_timeouts_and_errors_are_retried_with_growing_pauses() -> None:
    outcome, tried, slept = await run(
        [LoginOutcome.TIMED_OUT, LoginOutcome.ERROR, LoginOutcome.SUCCEEDED], attempts=3
    )
    assert (outcome, tried, slept) == (LoginOutcome.SUCCEEDED, [1, 2, 3], [5.0, 10.0])


async def test_an_explicit_rejection_ends_the_retries_at_once() -> None:
    outcome, tried, slept = await run([LoginOutcome.REJECTED, LoginOutcome.SUCCEEDED], attempts=3)
    assert (outcome, tried, slept) == (LoginOutcome.REJECTED, [1], [])


async def test_the_last_outcome_is_reported_without_a_pause_after_it() -> None:
    outcome, tried, slept = await run([LoginOutcome.TIMED_OUT, LoginOutcome.TIMED_OUT], attempts=2)
    assert (outcome, tried, slept) == (LoginOutcome.TIMED_OUT, [1, 2], [5.0])
