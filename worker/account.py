"""Runs in the worker: the account's runtime side — binary, login, model catalogue, cooldown.

The binary keeper reports the runtime up or down; on every start the session cache is dropped
(the runtime's sessions died), the dedicated endpoint is applied and the login is checked (the
first start may launch the browser auto-login). A watcher re-checks the login often while
logged out, rarely while logged in, right when an upstream-429 cooldown ends, and right when
a chat failed as logged out; a login found lost is renewed by auto-login (worker/login.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from protocol.specs import WorkerSpec
from protocol.vocabulary import LoginState
from worker.autologin import LoginOutcome
from worker.binary import BinaryKeeper
from worker.login import LoginManager
from worker.metrics import WorkerMetrics
from worker.models import ModelResolver, parse_models
from worker.rpc import RpcClosed, RpcError
from worker.runtime_client import RuntimeClient
from worker.sessions import SessionCache

log = logging.getLogger(__name__)

LOGGED_IN_RECHECK_S = 30.0
LOGGED_OUT_RECHECK_S = 1.0


class Account:
    def __init__(
        self,
        spec: WorkerSpec,
        *,
        metrics: WorkerMetrics,
        sessions: SessionCache,
    ) -> None:
        self.spec = spec
        self.metrics = metrics
        self.sessions = sessions
        self.resolver = ModelResolver(spec.model_aliases, spec.default_model)
        self.raw_models: dict[str, Any] = {}
        self.keeper = BinaryKeeper(spec, on_up=self._binary_up, on_down=self._binary_down)
        self.login = LoginManager(
            spec, lambda: self.keeper.client, on_attempt=self._count_login_attempt
        )
        self.cooldown_until = 0.0
        self.settled = False  # the first binary start finished (either way) and login was checked
        self._auto_login_tried = False
        self._recheck = asyncio.Event()
        self._login_doubted = False  # a chat failed as logged out since the last check

    @property
    def client(self) -> RuntimeClient | None:
        return self.keeper.client

    @property
    def logged_in(self) -> bool:
        return self.login.state is LoginState.LOGGED_IN

    @property
    def cooling_down(self) -> bool:
        return time.time() < self.cooldown_until

    @property
    def usable(self) -> bool:
        return self.client is not None and self.logged_in and not self.cooling_down

    async def run(self) -> None:
        """Keep the binary running and the login watched until cancelled."""
        watcher = asyncio.create_task(self._watch_login(), name="login-watcher")
        try:
            await self.keeper.run()
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)

    async def stop(self) -> None:
        await self.login.stop()
        await self.keeper.stop()

    # ----------------------------------------------------------------- binary events

    async def _binary_up(self, _client: RuntimeClient) -> None:
        self.sessions.clear()
        try:
            await self.login.apply_endpoint()
            state = await self.refresh_login()
            if state is not LoginState.LOGGED_IN and not self._auto_login_tried:
                self._auto_login_tried = True  # only the first start counts as "at startup"
                self.login.start_auto()
        except (RpcClosed, RpcError, TimeoutError) as exc:
            log.warning("post-start checks failed: %s", exc)
        self.settled = True
        log.info("binary ready", extra={"binary_pid": self.keeper.pid, "login": self.login.state})

    async def _binary_down(self, reason: str) -> None:
        self.sessions.clear()  # the runtime's sessions died with it
        if self.settled:
            self.metrics.binary_restarted()
        self.settled = True

    # ----------------------------------------------------------------- login and models

    async def refresh_login(self) -> LoginState:
        """auth/status; on becoming logged in (or with no catalogue yet) load the models."""
        before = self.login.state
        state = await self.login.refresh()
        stale = before is not state or not self.resolver.models
        if state is LoginState.LOGGED_IN and stale:
            await self.ensure_models()
        return state

    async def ensure_models(self) -> None:
        client = self.client
        if client is None or not self.logged_in:
            return
        with contextlib.suppress(RpcClosed, RpcError, TimeoutError):
            raw = await client.call("config/queryModels", {})
            self.raw_models = raw if isinstance(raw, dict) else {}
            self.resolver.update(parse_models(self.raw_models))

    async def _watch_login(self) -> None:
        while True:
            wait = LOGGED_IN_RECHECK_S if self.logged_in else LOGGED_OUT_RECHECK_S
            if self.cooldown_until:
                wait = min(wait, max(0.0, self.cooldown_until - time.time()))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._recheck.wait()
            self._recheck.clear()
            self.sessions.prune()
            if self.client is None:
                continue
            if self._login_doubted:
                self._login_doubted = False
                await self.login.doubt()
            state = await self.refresh_login()
            if self.cooldown_until and not self.cooling_down:
                self.cooldown_until = 0.0
                log.info("cooldown over; account re-checked", extra={"login": state})

    def chat_found_logged_out(self) -> None:
        """A chat failed as logged out (ErrorCode.NOT_LOGGED_IN): check and renew the login."""
        self._login_doubted = True
        self._recheck.set()

    def _count_login_attempt(self, outcome: LoginOutcome) -> None:
        self.metrics.login_attempted(outcome.value)

    # ----------------------------------------------------------------- cooldown

    def cool_down(self, seconds: float) -> None:
        self.cooldown_until = max(self.cooldown_until, time.time() + seconds)
        log.warning("upstream rate limit: cooling down for %.1fs", seconds)
        self._recheck.set()

    def clear_cooldown(self) -> None:
        self.cooldown_until = 0.0
        self._recheck.set()
