"""Runs in the supervisor: SIGHUP / `lingma-gw reload` - re-read the config and converge on it.

Added accounts get a worker at once; removed ones drain. A changed account (or front) gets a
replacement that must become READY before the old one drains, so nothing stops serving; if
the replacement cannot get READY (FATAL, or not within its login budget) the old one stays.
One exception: a worker's binary cannot start while the old worker's binary runs on the same
work dir (lingma-protocol.md §7.5). A replacement that reports it waits for the work dir
takes over at once: the old worker drains and exits, its binary lets go of the dir, the new
one starts; meanwhile the account is not routed to (the other accounts serve).
Fronts keep the listening port open throughout: they learn the new worker set through
WorkersUpdate, and are only replaced when their own settings (listen, keys, limits) changed,
each replacement binding the port (SO_REUSEPORT) before the old front stops listening.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec

from protocol.control_socket import ErrorReply, OkReply
from protocol.vocabulary import BinaryState, ChildState, ErrorCode
from supervisor.children import ChildFactory
from supervisor.config import Config, ConfigError, load_config
from supervisor.console import Console
from supervisor.handle import ChildHandle
from supervisor.roster import ChildKey, Roster, key_of
from supervisor.specs import front_spec, spec_changed, worker_specs
from supervisor.systemd import Notifier

log = logging.getLogger(__name__)

S = ChildState
SETTLED = frozenset({S.READY, S.FATAL, S.EXITED})
# Settings a running supervisor cannot move: its sockets and children's state live there.
FIXED_KEYS = ("runtime_dir", "state_dir")


@dataclass
class ReloadPlan:
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    fronts_changed: bool = False
    fronts_added: list[int] = field(default_factory=list)
    fronts_removed: list[int] = field(default_factory=list)

    def summary(self) -> str:
        parts = [
            f"{label} {', '.join(names)}"
            for label, names in (
                ("added", self.added),
                ("removed", self.removed),
                ("replacing", self.changed),
            )
            if names
        ]
        if self.fronts_changed:
            parts.append("replacing fronts")
        if self.fronts_added or self.fronts_removed:
            parts.append(f"fronts +{len(self.fronts_added)} -{len(self.fronts_removed)}")
        return "; ".join(parts) or "no changes"


def plan_reload(old: Config, new: Config) -> ReloadPlan:
    """What must change to go from `old` to `new` (a pure function of the two configs)."""
    old_specs, new_specs = worker_specs(old), worker_specs(new)
    plan = ReloadPlan(
        added=[name for name in new_specs if name not in old_specs],
        removed=[name for name in old_specs if name not in new_specs],
        changed=[
            name
            for name, spec in new_specs.items()
            if name in old_specs and spec_changed(old_specs[name], spec)
        ],
    )
    plan.fronts_changed = spec_changed(
        front_spec(old, 0, "", [], keys=[], limits_column=0),
        front_spec(new, 0, "", [], keys=[], limits_column=0),
    )
    plan.fronts_added = list(range(old.server.fronts, new.server.fronts))
    plan.fronts_removed = list(range(new.server.fronts, old.server.fronts))
    return plan


class Reloader:
    """Re-reads the config and converges the roster on it; only this changes the roster after
    start-up. The supervisor adopts the config `reload` returns."""

    def __init__(
        self,
        *,
        config_path: str,
        environ: dict[str, str],
        roster: Roster,
        children: ChildFactory,
        retire: Callable[[ChildHandle], None],
        workers_changed: Callable[[], None],
        adopting: Callable[[Config], None],
        notifier: Notifier,
        console: Console,
    ) -> None:
        self._config_path = config_path
        self._environ = environ  # a copy taken before secrets were scrubbed
        self._roster = roster
        self._children = children
        self._retire = retire
        self._workers_changed = workers_changed
        self._adopting = adopting  # told of the new config before children are made from it
        self._notifier = notifier
        self._console = console
        self._replacements: dict[ChildKey, tuple[ChildHandle, asyncio.Task[None]]] = {}

    def pending(self) -> list[ChildHandle]:
        """The replacements still starting (not on the roster yet)."""
        return [handle for handle, _ in self._replacements.values()]

    def reload(self, current: Config) -> tuple[Config, OkReply | ErrorReply]:
        """(the config to run with now, the reply): `current` again when it was refused.

        Synchronous on purpose: nothing else runs between reading the file and the roster
        having converged on it, so two reloads never interleave.
        """
        try:
            new = self._load(current)
        except ConfigError as exc:
            log.error("config not reloaded: %s", exc)  # noqa: TRY400 - no traceback wanted
            return current, ErrorReply(code=ErrorCode.BAD_REQUEST, message=f"not reloaded: {exc}")
        self._notifier.reloading()
        plan = plan_reload(current, new)
        self._adopting(new)
        self._apply(plan, new)
        self._notifier.ready(f"reloaded: {plan.summary()}")
        log.info("reload: %s", plan.summary())
        self._console.line(f"reloaded {self._config_path}: {plan.summary()}")
        data = msgspec.structs.asdict(_plan_struct(plan))
        return new, OkReply(message=plan.summary(), data=data)

    def _load(self, current: Config) -> Config:
        new = load_config(self._config_path, environ=self._environ)
        for key in FIXED_KEYS:
            if getattr(new.server, key) != getattr(current.server, key):
                raise ConfigError(f"server.{key} cannot change while running (restart)")
        return new

    def _apply(self, plan: ReloadPlan, config: Config) -> None:
        roster, children = self._roster, self._children
        accounts = {account.name: account for account in config.accounts}
        budget_s = config.lingma.startup_timeout_s + config.browser.login_timeout_s + 30
        for name in plan.removed:
            self._cancel_replacement(ChildKey.worker(name))
            self._retire(roster.remove(ChildKey.worker(name)))
        for name in plan.added:
            roster.add(handle := children.worker(config, accounts[name]))
            handle.start()
        for name in plan.changed:
            self._replace(children.worker(config, accounts[name]), budget_s)
        for index in plan.fronts_removed:
            self._cancel_replacement(ChildKey.front(index))
            self._retire(roster.remove(ChildKey.front(index)))
        for index in plan.fronts_added:
            roster.add(handle := children.front(config, index))
            handle.start()
        if plan.fronts_changed:
            kept = config.server.fronts - len(plan.fronts_added)
            for index in range(kept):
                self._replace(children.front(config, index), budget_s)
        self._workers_changed()

    def _replace(self, new: ChildHandle, budget_s: float) -> None:
        key = key_of(new)
        self._cancel_replacement(key)
        new.start()
        task = asyncio.create_task(self._swap_when_ready(new, budget_s), name=f"replace-{key}")
        self._replacements[key] = (new, task)

    def _cancel_replacement(self, key: ChildKey) -> None:
        entry = self._replacements.pop(key, None)
        if entry is not None:
            entry[1].cancel()

    async def _swap_when_ready(self, new: ChildHandle, budget_s: float) -> None:
        key = key_of(new)
        deadline = asyncio.get_running_loop().time() + budget_s
        swapped = False
        try:
            # Wait while the old child serves and the new one is still on its way; an old
            # child that is not serving anyway (backoff, FATAL, logged out) is replaced at once.
            while (
                new.state not in SETTLED
                and self._serving(key).state == S.READY
                and not waits_for_work_dir(new)
                and asyncio.get_running_loop().time() < deadline
            ):
                await new.wait_for_state(SETTLED, 0.5)
            old = self._serving(key)
            stuck = new.state != S.READY and old.state == S.READY and not waits_for_work_dir(new)
            if new.state in (S.FATAL, S.EXITED) or stuck:
                log.error("%s: replacement is %s: keeping the old one", key, new.state.value)
                return
            self._roster.replace(new)
            swapped = True
            self._workers_changed()
            self._retire(old)
        finally:
            entry = self._replacements.get(key)
            if entry is not None and entry[0] is new:
                del self._replacements[key]
            if not swapped:
                self._retire(new)

    def _serving(self, key: ChildKey) -> ChildHandle:
        handle = self._roster.get(key)
        assert handle is not None, f"{key} has a replacement but nothing it replaces"
        return handle

    async def cancel(self) -> None:
        """At shutdown: abandon replacements in flight (their new children are retired)."""
        tasks = [task for _, task in self._replacements.values()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


def waits_for_work_dir(handle: ChildHandle) -> bool:
    """The replacement's binary waits for the old one to leave their shared work dir."""
    pong = handle.last_pong
    return pong is not None and pong.binary is BinaryState.WAITING_FOR_WORK_DIR


class PlanData(msgspec.Struct, frozen=True, kw_only=True):
    added: list[str]
    removed: list[str]
    changed: list[str]
    fronts_changed: bool


def _plan_struct(plan: ReloadPlan) -> PlanData:
    return PlanData(
        added=plan.added,
        removed=plan.removed,
        changed=plan.changed,
        fronts_changed=plan.fronts_changed,
    )
