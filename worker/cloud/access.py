"""Runs in the worker: the account's standing with the cloud — credential, base URL, models.

READY needs the runtime logged in (it holds and refreshes the login), a credential that
decrypts, a base URL, and no standing rejection. A rejection (the cloud refused the login even
after one re-read) lasts until the credential files change or `cooldown_s` passes, then a
signed model-list request re-checks it. The base URL is chosen once: the first candidate whose
model list answers (§14.13: cache the one that works); if none answers, the first candidate
serves anyway, so a chat with an explicit model key still works (§14.16 item 4).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from protocol.specs import WorkerSpec
from protocol.worker_socket import ModelInfo
from worker.cloud import discovery
from worker.cloud.client import CloudClient
from worker.cloud.credential import Credential, CredentialError, CredentialStore
from worker.cloud.errors import CloudFailure, FailureKind
from worker.models import ModelResolver, parse_models
from worker.rpc import RpcClosed, RpcError
from worker.runtime_client import RuntimeClient

log = logging.getLogger(__name__)

READY_RECHECK_S = 30.0
WAITING_RECHECK_S = 1.0
MODELS_MAX_AGE_S = 600.0
CREDENTIAL_RECHECK_S = 1.0  # a refreshed login is seen within this (an auth error re-reads at once)


class RuntimeView(Protocol):
    """What the cloud side needs of the runtime side (worker/account.py's Account)."""

    resolver: ModelResolver  # the runtime's model list: the fallback when the cloud's fails

    @property
    def client(self) -> RuntimeClient | None: ...

    @property
    def logged_in(self) -> bool: ...

    def cool_down(self, seconds: float) -> None: ...


@dataclass(frozen=True)
class LoginRejection:
    """The cloud refused this login; it lasts while the credential stays the same."""

    login: Credential
    reason: str
    recheck_at: float  # monotonic: then a signed model-list request asks again


class CloudState(enum.StrEnum):
    WAITING_FOR_RUNTIME = "waiting_for_runtime"
    NO_CREDENTIAL = "no_credential"
    NO_BASE_URL = "no_base_url"
    REJECTED = "rejected"
    READY = "ready"


class CloudAccess:
    def __init__(self, spec: WorkerSpec, runtime: RuntimeView, client: CloudClient) -> None:
        self.spec = spec
        self.runtime = runtime
        self.client = client
        self.credentials = CredentialStore(
            spec.work_dir, spec.cloud_credential_file, recheck_s=CREDENTIAL_RECHECK_S
        )
        self.resolver = ModelResolver(spec.model_aliases, spec.default_model)
        self.raw_models: dict[str, Any] = {}
        self.base_url = ""
        self.base_source = ""
        self.base_problem = ""
        self._models_at = 0.0
        self._rejection: LoginRejection | None = None
        self._wake = asyncio.Event()

    # ----------------------------------------------------------------- state

    @property
    def models(self) -> list[ModelInfo]:
        return self.resolver.models

    @property
    def state(self) -> CloudState:
        if not self.runtime.logged_in:
            return CloudState.WAITING_FOR_RUNTIME
        try:
            credential = self.credentials.current()
        except CredentialError:
            return CloudState.NO_CREDENTIAL
        if self._rejection is not None:
            if self._rejection.login.same_login(credential):
                return CloudState.REJECTED
            self._rejection = None  # the runtime wrote a new login: try it
            log.info("the credential changed since the cloud rejected it: serving again")
        return CloudState.READY if self.base_url else CloudState.NO_BASE_URL

    @property
    def ready(self) -> bool:
        return self.state is CloudState.READY

    @property
    def note(self) -> str:
        """Why the cloud backend cannot serve, for `status` (never a secret)."""
        state = self.state
        if state is CloudState.NO_CREDENTIAL:
            return f"cloud credential unusable: {self.credentials.problem}"
        if state is CloudState.REJECTED and self._rejection is not None:
            return self._rejection.reason
        if state is CloudState.NO_BASE_URL:
            return "cloud base URL not resolved yet"
        if state is CloudState.READY and self.base_problem:
            return self.base_problem
        return ""

    def credential(self) -> Credential:
        return self.credentials.current()

    # ----------------------------------------------------------------- upstream verdicts

    def after_auth_failure(self, used: Credential, failure: CloudFailure) -> Credential | None:
        """Re-read the credential once: a changed one is worth one retry, else a rejection."""
        try:
            fresh = self.credentials.reload()
        except CredentialError:
            fresh = None
        if fresh is not None and not fresh.same_login(used):
            log.info("the cloud refused the login; the credential changed since: retrying")
            return fresh
        self._reject(used, failure)
        return None

    def _reject(self, login: Credential, failure: CloudFailure) -> None:
        reason = (
            f"the cloud rejected this account's login ({failure.message}); it stays out of "
            "rotation until the runtime refreshes cache/user or `lingma-gw login` renews it"
        )
        self._rejection = LoginRejection(login, reason, time.monotonic() + self.spec.cooldown_s)
        self._wake.set()
        log.warning("cloud login rejected: %s", failure.message)

    # ----------------------------------------------------------------- background upkeep

    async def run(self) -> None:
        """Resolve the base URL and models, re-check rejections; until cancelled."""
        while True:
            try:
                await self.refresh()
            except Exception:  # a bug here must not end the upkeep, nor go unnoticed
                log.exception("cloud upkeep failed")
            wait = READY_RECHECK_S if self.ready else WAITING_RECHECK_S
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()
            self._wake.clear()

    def poke(self) -> None:
        self._wake.set()

    async def refresh(self) -> None:
        if not self.runtime.logged_in:
            return
        try:
            credential = self.credentials.current()
        except CredentialError:
            return
        rejection = self._rejection
        if rejection is not None and rejection.login.same_login(credential):
            if time.monotonic() >= rejection.recheck_at:
                await self._recheck_rejection(rejection, credential)
            return
        if not self.base_url or self.base_problem:
            await self._choose_base_url(credential)
        elif time.monotonic() - self._models_at > MODELS_MAX_AGE_S:
            with contextlib.suppress(CloudFailure):
                await self._load_models(self.base_url, credential)

    async def _recheck_rejection(self, rejection: LoginRejection, credential: Credential) -> None:
        try:
            if self.base_url:
                await self._load_models(self.base_url, credential)
        except CloudFailure as exc:
            if exc.kind is FailureKind.AUTH:
                later = time.monotonic() + self.spec.cooldown_s
                self._rejection = LoginRejection(rejection.login, rejection.reason, later)
                return
        self._rejection = None
        log.info("cloud login accepted again")

    async def _runtime_endpoint(self) -> str:
        client = self.runtime.client
        if client is None:
            return ""
        try:
            reply = await client.call("config/getEndpoint", {})
        except (RpcClosed, RpcError, TimeoutError, OSError):
            return ""
        return discovery.endpoint_of(reply)

    async def _choose_base_url(self, credential: Credential) -> None:
        found = discovery.candidates(
            explicit=self.spec.cloud_base_url,
            runtime_endpoint=await self._runtime_endpoint(),
            dedicated_domain=self.spec.dedicated_domain_url,
            binary_args=self.spec.binary_args,
            work_dir=Path(self.spec.work_dir),
        )
        problems: list[str] = []
        for candidate in found:
            try:
                await self._load_models(candidate.url, credential)
            except CloudFailure as exc:
                if exc.kind is FailureKind.AUTH:  # the login, not the host: any host would say so
                    self._use_base(candidate, "")
                    self._reject(credential, exc)
                    return
                problems.append(f"{candidate.url} ({candidate.source}): {exc.message}")
                continue
            self._use_base(candidate, "")
            return
        problem = "cloud model list failed on every base URL: " + "; ".join(problems)
        self._use_base(found[0], problem)

    def _use_base(self, candidate: discovery.BaseUrlCandidate, problem: str) -> None:
        self.base_url, self.base_source = candidate.url, candidate.source
        self.base_problem = problem
        log.info("cloud base URL %s (from %s)", candidate.url, candidate.source)
        if problem:
            log.warning("%s", problem)

    async def _load_models(self, base_url: str, credential: Credential) -> None:
        raw = await self.client.list_models(base_url, credential)
        self.raw_models = raw
        self.resolver.update(parse_models(raw))
        self._models_at = time.monotonic()
