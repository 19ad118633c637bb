"""Runs in the front: which workers a chat may try, and its wait for accounts that are logging in.

The candidates are the READY workers whose backend can serve the plan, in routing order
(front/routing.py). When none is READY the pool is re-pinged once, since a worker may have
become READY since the last ping. When still none is READY but an eligible account is logging
in (auto-login renewing a lost login), the request waits for one to become READY, up to the
queue timeout and never past its own deadline, then gets 503 with Retry-After; it stops
waiting as soon as no eligible account is logging in any more. Accounts that are not READY for
other reasons (logged out without auto-login, restarting, FATAL) are not waited for.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from front.backends import RequestForms
from front.context import FrontContext
from front.errors import ApiError, ErrorKind, no_ready_account_message
from front.worker_pool import RECHECK_TIMEOUT_S, WorkerLink

log = logging.getLogger(__name__)

LOGIN_RETRY_AFTER_S = 5.0


async def candidate_links(
    ctx: FrontContext, forms: RequestForms, affinity: str, deadline: float | None
) -> list[WorkerLink]:
    """Workers to try in order; [] when none is READY (the caller answers 503).

    Raises 429 when READY workers exist but all are at their limit, 503 when the accounts the
    request waited for did not finish logging in. `deadline` is event-loop time (None: none).
    """
    pool = ctx.pool

    def routable() -> list[WorkerLink]:
        attempts = pool.attempts(affinity, ctx.spec.per_worker_max_in_flight)
        return forms.eligible(attempts, pool.links.values())

    def any_ready() -> bool:
        return bool(forms.eligible(pool.ready_links(), pool.links.values()))

    links = routable()
    if not links and not any_ready():
        await pool.recheck(timeout=RECHECK_TIMEOUT_S)
        links = routable()
        if not links and not any_ready():
            links = await _wait_for_login(ctx, forms, routable, deadline)
    if not links and any_ready():
        raise ApiError(
            ErrorKind.OVERLOADED, "every account is at its concurrency limit", retry_after=1.0
        )
    return links


async def _wait_for_login(
    ctx: FrontContext,
    forms: RequestForms,
    routable: Callable[[], list[WorkerLink]],
    deadline: float | None,
) -> list[WorkerLink]:
    pool = ctx.pool

    def logging_in() -> list[WorkerLink]:
        return forms.eligible(pool.logging_in_links(), pool.links.values())

    waited_for = logging_in()
    if not waited_for:
        return []
    loop = asyncio.get_running_loop()
    until = loop.time() + ctx.spec.queue_timeout_s
    if deadline is not None:
        until = min(until, deadline)
    log.info(
        "no READY account: waiting up to %.1fs for %s to log in",
        max(0.0, until - loop.time()),
        ", ".join(link.name for link in waited_for),
    )
    while (remaining := until - loop.time()) > 0:
        await pool.changed(remaining)
        links = routable()
        if links:
            return links
        if not logging_in():
            break  # the logins ended without a READY account: no reason to wait longer
    detail = "; ".join(_logging_in_text(link) for link in waited_for)
    raise ApiError(
        ErrorKind.UNAVAILABLE,
        no_ready_account_message(detail),
        retry_after=LOGIN_RETRY_AFTER_S,
    )


def _logging_in_text(link: WorkerLink) -> str:
    attempt = f", attempt {link.login_attempt}" if link.login_attempt else ""
    return f"{link.name}: logging in{attempt}"
