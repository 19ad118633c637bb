"""Runs in the worker: the account's login — status, endpoint, manual URL, auto-login, bundles.

Login state comes only from the runtime's `auth/status` (status 2 = logged in). A fresh work dir
can be logged in three ways: a login bundle (`export-session`) unpacked before the binary
starts, the headless browser with the configured credentials, or an operator opening the URL
from `auth/login`.
Auto-login never disables an account: only an explicit error on the login page counts as a
rejection (and stops the retries); timeouts and browser errors are retried with backoff up to
`max_retry` more times; either way the account stays DEGRADED with the manual URL ready.
Credentials, tokens and bundles never reach a log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import re
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


def login_backoff() -> Backoff:
    """Between auto-login attempts: 5 s doubling to 2 min (a login page is slow to recover)."""
    return Backoff(base_s=5.0, cap_s=120.0)


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
        backoff: Callable[[], Backoff] = login_backoff,
    ) -> None:
        self.spec = spec
        self.state = LoginState.UNKNOWN
        self.auto = AutoLogin.IDLE if self.auto_configured else AutoLogin.DISABLED
        self.attempt = 0  # the auto-login attempt under way (or the last one)
        self.user = ""
        self.url = ""
        self.message = ""
        self._client = client
        self._backoff = backoff
        self._task: asyncio.Task[None] | None = None

    @property
    def auto_configured(self) -> bool:
        login = self.spec.login
        return login.auto_login and bool(login.username) and bool(login.password)

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

    async def refresh(self) -> LoginState:
        """Ask the runtime; transport failures leave the last known state in place."""
        try:
            status = await self._require_client().call("auth/status", {})
        except (LoginUnavailable, RpcClosed, RpcError, TimeoutError, OSError):
            return self.state
        if is_logged_in(status):
            self.state = LoginState.LOGGED_IN
            self.user = str(status.get("name") or status.get("id") or "")
            self.url = ""
        elif self.auto is AutoLogin.RUNNING:
            self.state = LoginState.LOGGING_IN
        else:
            self.state = LoginState.LOGGED_OUT
            self.user = ""
        return self.state

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

    def start_auto(self) -> bool:
        """Start the browser login in the background; False if it is off or already running."""
        if not self.auto_configured or (self._task is not None and not self._task.done()):
            return False
        self.auto = AutoLogin.RUNNING
        self.state = LoginState.LOGGING_IN
        self._task = asyncio.create_task(self._auto_login())
        return True

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def _auto_login(self) -> None:
        attempts = 1 + max(0, self.spec.login.max_retry)
        outcome = await run_attempts(self._attempt, attempts=attempts, backoff=self._backoff())
        if outcome is LoginOutcome.SUCCEEDED:
            self.auto = AutoLogin.SUCCEEDED
            self.message = "logged in by auto-login"
            await self.refresh()
            return
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
        login = self.spec.login
        self.attempt = number
        try:
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
        client = self._client()
        if client is None:
            return False
        try:
            return is_logged_in(await client.call("auth/status", {}))
        except (RpcClosed, RpcError, TimeoutError, OSError):
            return False
