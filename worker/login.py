"""Runs in the worker: the account's login — status, endpoint, manual URL, auto-login, bundles.

Login state comes only from the runtime's `auth/status` (status 2 = logged in). A fresh work dir
can be logged in three ways: a login bundle (`export-session`) unpacked before the binary
starts, the headless browser with the configured credentials, or an operator opening the URL
from `auth/login`.
Auto-login never disables an account: only an explicit error on the login page counts as a
rejection (and stops the retries); timeouts and browser errors are retried with backoff up to
`max_retry` more times; either way the account stays DEGRADED with the manual URL ready.
A login lost while running starts auto-login again: `auth/status` going from logged in to
logged out, or a chat failing as logged out while the runtime still reports the login (a
token the server revoked, lingma-protocol.md §10: chat while logged out is undocumented). In
the second case that login counts as dead until the runtime reports another one (new tokens).
Logins that keep getting lost soon after they were made are renewed after growing pauses, so
a revoked account cannot keep a browser busy. Credentials, tokens and bundles never reach a
log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from protocol.backoff import Backoff
from protocol.specs import WorkerSpec
from protocol.vocabulary import LoginState
from protocol.worker_socket import LoginInfo
from worker import bundles
from worker.autologin import LoginOutcome, browser_login
from worker.rpc import RpcClosed, RpcError, refused
from worker.runtime_client import RuntimeClient

log = logging.getLogger(__name__)

_URL = re.compile(r"https?://\S+")


class AutoLogin(enum.StrEnum):
    IDLE = "idle"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    DISABLED = "disabled"


class LoginUnavailable(RuntimeError):
    """The runtime is not reachable right now, so no login action is possible."""


def login_backoff(first_pause_s: float = 5.0) -> Backoff:
    """Between auto-login attempts: 5 s doubling to 2 min (a login page is slow to recover)."""
    return Backoff(base_s=first_pause_s, cap_s=max(first_pause_s, 120.0))


def relogin_backoff(first_pause_s: float = 5.0) -> Backoff:
    """Before renewing a lost login: the same pauses, reset once a login held for 10 minutes."""
    return Backoff(base_s=first_pause_s, cap_s=max(first_pause_s, 300.0), reset_after_s=600.0)


async def run_attempts(
    attempt: Callable[[int], Awaitable[LoginOutcome]],
    *,
    attempts: int,
    backoff: Backoff,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> LoginOutcome:
    """Up to `attempts` tries with backoff between them; a success or a rejection ends it."""
    outcome = LoginOutcome.ERROR
    for number in range(1, attempts + 1):
        outcome = await attempt(number)
        log.info("auto-login attempt %d/%d: %s", number, attempts, outcome.value)
        if outcome in (LoginOutcome.SUCCEEDED, LoginOutcome.REJECTED) or number == attempts:
            break
        await sleep(backoff.next_delay(0.0))
    return outcome


def is_logged_in(status: Any) -> bool:
    if not isinstance(status, dict):
        return False
    if "status" in status:
        return status.get("status") == 2
    return bool(status.get("id"))  # the reference gateway's test, for runtimes without `status`


def login_identity(status: Any) -> str:
    """Which login `auth/status` reports: its tokens and expiry ("" when it names none)."""
    if not is_logged_in(status):
        return ""
    parts = [str(status.get(key) or "") for key in ("token", "refreshToken", "expireTime")]
    return "|".join(parts) if any(parts) else ""


def login_url_from(result: Any) -> str:
    """`url` (auth/login) or `loginUrl` (login/generateUrl), else the first URL in the reply."""
    if isinstance(result, dict):
        for key in ("url", "loginUrl", "authUrl"):
            value = result.get(key)
            if isinstance(value, str) and value.startswith("http"):
                return value
    match = _URL.search(str(result))
    return match.group(0).rstrip("\"',}") if match else ""


def import_bundle(spec: WorkerSpec) -> bool:
    """Unpack the configured bundle into a work dir that holds no login yet; True if it did."""
    if not spec.login.bundle_b64:
        return False
    if bundles.has_login(spec.work_dir):
        log.info("work dir already holds a login: the configured session bundle is not applied")
        return False
    try:
        written = bundles.unpack_bundle(bundles.decode_bundle(spec.login.bundle_b64), spec.work_dir)
    except bundles.BundleError as exc:
        problem = str(exc)
    else:
        log.info("session bundle imported", extra={"files": len(written)})
        return True
    log.error("session bundle rejected: %s", problem)
    return False


class LoginManager:
    def __init__(
        self,
        spec: WorkerSpec,
        client: Callable[[], RuntimeClient | None],
        *,
        on_attempt: Callable[[LoginOutcome], None] = lambda _outcome: None,
    ) -> None:
        self.spec = spec
        self.state = LoginState.UNKNOWN
        self.auto = AutoLogin.IDLE if self.auto_configured else AutoLogin.DISABLED
        self.attempt = 0  # the auto-login attempt under way (or the last one)
        self.user = ""
        self.url = ""
        self.message = ""
        self._client = client
        self._on_attempt = on_attempt
        self._task: asyncio.Task[None] | None = None
        self._relogin_pauses = relogin_backoff(spec.login.retry_pause_s)
        self._logged_in_since = time.monotonic()
        self._dead_login = ""  # a login the runtime reports but a chat found gone
        self._abandoned_login = ""  # a dead login auto-login could not renew: not tried again

    @property
    def auto_configured(self) -> bool:
        login = self.spec.login
        return login.auto_login and bool(login.username) and bool(login.password)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def info(self, request_id: int) -> LoginInfo:
        return LoginInfo(
            id=request_id,
            account=self.spec.name,
            login=self.state,
            auto_login=self.auto.value,
            url=self.url,
            message=self.message,
            user=self.user,
        )

    def _require_client(self) -> RuntimeClient:
        client = self._client()
        if client is None:
            raise LoginUnavailable("the Lingma runtime is not up")
        return client

    async def _status(self) -> Any:
        """`auth/status`, or None when the runtime cannot be asked right now."""
        try:
            return await self._require_client().call("auth/status", {})
        except (LoginUnavailable, RpcClosed, RpcError, TimeoutError, OSError):
            return None

    def _live(self, status: Any) -> bool:
        """Logged in, with a login no chat has found dead."""
        return is_logged_in(status) and login_identity(status) != self._dead_login

    async def refresh(self) -> LoginState:
        """Ask the runtime; transport failures leave the last known state in place.

        A login that was there and is gone (logged in -> logged out) is renewed by auto-login.
        """
        status = await self._status()
        if status is None:
            return self.state
        before = self.state
        if self._live(status):
            if before is not LoginState.LOGGED_IN:
                self._logged_in_since = time.monotonic()
            self.state = LoginState.LOGGED_IN
            self.user = str(status.get("name") or status.get("id") or "")
            self.url = ""
        elif self.auto is AutoLogin.RUNNING:
            self.state = LoginState.LOGGING_IN
        else:
            self.state = LoginState.LOGGED_OUT
            self.user = ""
        if before is LoginState.LOGGED_IN and self.state is LoginState.LOGGED_OUT:
            log.warning("the account's login is gone (auth/status reports no login)")
            self._renew()
        return self.state

    async def doubt(self) -> None:
        """A chat failed as logged out: renew the login even if the runtime still reports it.

        Only with auto-login: without it the account keeps serving on the runtime's word (the
        front retries such chats elsewhere), and `lingma-gw login` renews it by hand.
        """
        status = await self._status()
        if not self.auto_configured or not is_logged_in(status):
            return  # logged out indeed: refresh() sees it and renews it
        identity = login_identity(status)
        if self._task is not None and not self._task.done():
            # An auto-login is finishing (the runtime may report its login before the browser
            # closes): judge the doubt once it is over, and only if that login is still there.
            await asyncio.wait({self._task})
            if login_identity(await self._status()) != identity:
                return  # another login since: the doubted one is gone already
        if not identity or identity == self._abandoned_login:
            return  # no way to tell a renewed login from this one, or renewing it failed before
        log.warning("a chat found the login gone while the runtime still reports it: renewing it")
        self._dead_login = identity
        self.state = LoginState.LOGGED_OUT
        self._renew()

    def _renew(self) -> None:
        """Start auto-login for a lost login, after a pause that grows when logins keep dying."""
        if not self.auto_configured:
            log.warning("auto-login is off: log the account in with `lingma-gw login NAME`")
            return
        held_s = time.monotonic() - self._logged_in_since
        self.start_auto(pause_s=self._relogin_pauses.next_delay(held_s))

    async def apply_endpoint(self) -> None:
        """Point the runtime at the dedicated domain when one is configured (as the seed did)."""
        wanted = self.spec.dedicated_domain_url
        if not wanted:
            return
        client = self._require_client()
        try:
            current = await client.call("config/getEndpoint", {})
            endpoint = current.get("endpoint", "") if isinstance(current, dict) else ""
            if endpoint != wanted:
                result = await client.call("config/updateEndpoint", {"endpoint": wanted})
                if refused(result):  # `{success: false}` (§5.2), not a JSON-RPC error
                    reason = result.get("errorMessage") or "no reason given"
                    log.warning("the runtime refused the dedicated endpoint: %s", reason)
                else:
                    log.info("dedicated endpoint applied", extra={"endpoint": wanted})
        except (RpcClosed, RpcError, TimeoutError) as exc:
            log.warning("switching to the dedicated endpoint failed: %s", exc)

    async def manual_url(self) -> str:
        """A login URL for an operator (auth/login, else login/generateUrl)."""
        client = self._require_client()
        await self.apply_endpoint()
        url = ""
        for method in ("auth/login", "login/generateUrl"):
            try:
                url = login_url_from(await client.call(method, {}))
            except RpcError as exc:
                log.info("%s failed: %s", method, exc)
                continue
            if url:
                break
        self.url = url
        self.message = "open the URL in a browser to log in" if url else "no login URL available"
        return url

    def start_auto(self, pause_s: float = 0.0) -> bool:
        """Start the browser login in the background; False if it is off or already running."""
        if not self.auto_configured or self.running:
            return False
        self.auto = AutoLogin.RUNNING
        self.state = LoginState.LOGGING_IN
        self.attempt = 0
        self._task = asyncio.create_task(self._auto_login(pause_s), name="auto-login")
        return True

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def _auto_login(self, pause_s: float) -> None:
        if pause_s > 0:
            log.info("auto-login in %.1fs", pause_s)
            self.message = f"auto-login starts in {pause_s:.0f}s"
            await asyncio.sleep(pause_s)
        attempts = 1 + max(0, self.spec.login.max_retry)
        backoff = login_backoff(self.spec.login.retry_pause_s)
        outcome = await run_attempts(self._attempt, attempts=attempts, backoff=backoff)
        abandoned, self._dead_login = self._dead_login, ""
        if outcome is LoginOutcome.SUCCEEDED:
            self.auto = AutoLogin.SUCCEEDED
            self.message = "logged in by auto-login"
            await self.refresh()
            return
        self._abandoned_login = abandoned or self._abandoned_login
        self.auto = AutoLogin.FAILED
        await self.refresh()
        if outcome is LoginOutcome.REJECTED:
            log.error("the login page rejected the credentials: log in by URL or fix them")
        with contextlib.suppress(LoginUnavailable, RpcClosed, RpcError, TimeoutError, OSError):
            await self.manual_url()  # the operator's way in stays open
        self.message = f"auto-login {outcome.value} after {self.attempt} attempt(s); " + (
            "open the login URL to log in by hand" if self.url else "no login URL available"
        )

    async def _attempt(self, number: int) -> LoginOutcome:
        self.attempt = number
        outcome = await self._try_login()
        self._on_attempt(outcome)
        return outcome

    async def _try_login(self) -> LoginOutcome:
        login = self.spec.login
        try:
            if await self._logged_in_now():  # by hand, or the runtime renewed it meanwhile
                return LoginOutcome.SUCCEEDED
            url = await self.manual_url()
            if not url:
                return LoginOutcome.ERROR
            return await browser_login(
                url,
                login.username,
                login.password,
                executable_path=login.executable_path,
                headless=login.headless,
                timeout_s=login.timeout_s,
                logged_in=self._logged_in_now,
            )
        except (LoginUnavailable, RpcClosed, RpcError, TimeoutError, OSError) as exc:
            self.message = f"auto-login attempt failed: {type(exc).__name__}"
            log.warning("auto-login attempt failed: %s", exc)
            return LoginOutcome.ERROR
        except Exception as exc:  # Playwright raises its own Error / TimeoutError types
            self.message = f"auto-login browser error: {type(exc).__name__}"
            log.warning("auto-login browser error: %s", type(exc).__name__)
            return LoginOutcome.ERROR

    async def _logged_in_now(self) -> bool:
        return self._live(await self._status())
