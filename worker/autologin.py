"""Runs in the worker: one headless browser login through Lingma's login page (Playwright).

The page is Alibaba's account form (lingma-protocol.md §8): `#fm-login-id`,
`#fm-login-password` and a submit button, possibly inside the `#alibaba-login-box` iframe,
so every frame is searched. After submitting, the runtime's own `/auth/callback` completes the
login; the caller polls `auth/status` meanwhile. Credentials are typed into the page only and
never logged.

Playwright is imported when a login runs, not with the module: every worker imports this one,
most never open a browser, and Playwright's import costs an idle worker about 7 MiB.
"""

# ruff: noqa: PLC0415 - Playwright is imported inside the functions, see the module docstring
from __future__ import annotations

import asyncio
import enum
import logging
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from playwright.async_api import Frame, Page

log = logging.getLogger(__name__)

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
USERNAME_FIELD = "#fm-login-id"
PASSWORD_FIELD = "#fm-login-password"  # noqa: S105 - a CSS selector, not a secret
SUBMIT_BUTTONS = ("#fm-login-submit", "button[type=submit]", "input[type=submit]")
# Where Alibaba-style login forms put "wrong account or password"; seeing one ends the attempt.
LOGIN_ERRORS = ".login-error, .login-error-msg, #login-error, .fm-error"
FORM_WAIT_S = 20.0
POLL_S = 1.0


class LoginOutcome(enum.StrEnum):
    SUCCEEDED = "succeeded"
    REJECTED = "rejected"  # the page showed an explicit login error: bad credentials
    TIMED_OUT = "timed_out"  # no login and no error within the attempt's time: retry later
    ERROR = "error"  # the browser or the page did not work; a retry may help


async def _find_form(page: Page, timeout: float) -> Frame | None:
    from playwright.async_api import Error as PlaywrightError

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for frame in page.frames:
            try:
                if await frame.query_selector(USERNAME_FIELD) is not None:
                    return frame
            except PlaywrightError:
                continue  # a frame navigated away while we looked
        await asyncio.sleep(0.2)
    return None


async def _submit(frame: Frame, username: str, password: str) -> None:
    await frame.fill(USERNAME_FIELD, username)
    await frame.fill(PASSWORD_FIELD, password)
    for selector in SUBMIT_BUTTONS:
        button = await frame.query_selector(selector)
        if button is not None:
            await button.click()
            return
    await frame.press(PASSWORD_FIELD, "Enter")


async def _shown(page: Page, selector: str) -> bool:
    from playwright.async_api import Error as PlaywrightError

    for frame in page.frames:
        try:
            element = await frame.query_selector(selector)
            if element is not None and await element.is_visible():
                return True
        except PlaywrightError:
            continue  # a frame navigated away while we looked
    return False


async def browser_login(
    url: str,
    username: str,
    password: str,
    *,
    executable_path: str,
    headless: bool,
    timeout_s: float,
    logged_in: Callable[[], Awaitable[bool]],
) -> LoginOutcome:
    """Open `url`, submit the credentials, then wait until `logged_in()` or `timeout_s`."""
    from playwright.async_api import async_playwright

    deadline = time.monotonic() + timeout_s
    with tempfile.TemporaryDirectory(prefix="lingma-gw-chromium-") as profile:
        async with async_playwright() as playwright:
            context = await playwright.chromium.launch_persistent_context(
                profile, executable_path=executable_path, headless=headless, args=CHROMIUM_ARGS
            )
            try:
                page = context.pages[0] if context.pages else await context.new_page()
                await page.goto(url, wait_until="domcontentloaded", timeout=timeout_s * 1000)
                frame = await _find_form(page, min(FORM_WAIT_S, timeout_s))
                if frame is None:
                    log.warning("login page shows no %s field", USERNAME_FIELD)
                    return LoginOutcome.ERROR
                await _submit(frame, username, password)
                while time.monotonic() < deadline:
                    if await logged_in():
                        return LoginOutcome.SUCCEEDED
                    if await _shown(page, LOGIN_ERRORS):
                        return LoginOutcome.REJECTED
                    await asyncio.sleep(POLL_S)
                # A page still asking could be a captcha or a slow redirect as well as a bad
                # password: only an explicit error message counts as a rejection.
                return LoginOutcome.TIMED_OUT
            finally:
                await context.close()
