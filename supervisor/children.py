"""Runs in the supervisor: the handle of each new child, made from the config.

A worker's handle gets its account's `WorkerSpec`; a front's gets a `FrontSpec` whose worker set
and key table are read again at every (re)spawn, so a restarted front starts with the workers
and keys of that moment. A front's handle holds a column of the key limits table
(supervisor/keyservice.py) from its creation until it is retired.
Each child gets a socket path no other live handle uses (a replacement starts while the child
it replaces still listens).
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from protocol.front_socket import FrontReply, WorkerRef
from protocol.keys import KeyEntry
from protocol.specs import FrontSpec
from protocol.vocabulary import ChildKind
from protocol.worker_socket import WorkerReply
from supervisor.config import AccountConfig, Config
from supervisor.handle import ChildHandle, PongHook, Timings, TransitionHook
from supervisor.spawn import FRONT_MODULE, WORKER_MODULE
from supervisor.specs import front_socket_path, front_spec, worker_socket_path, worker_spec

MAX_SERIALS = 1000

# A front's key table and its column in the limits table, for its socket path, at each spawn.
FrontKeys = Callable[[str], tuple[list[KeyEntry], int]]


class ChildFactory:
    def __init__(
        self,
        *,
        paths_in_use: Callable[[], set[str]],
        worker_refs: Callable[[], list[WorkerRef]],
        claim_key_column: Callable[[str], int],
        front_keys: FrontKeys,
        on_transition: TransitionHook,
        on_pong: PongHook,
    ) -> None:
        self._paths_in_use = paths_in_use
        self._worker_refs = worker_refs
        self._claim_key_column = claim_key_column
        self._front_keys = front_keys
        self._on_transition = on_transition
        self._on_pong = on_pong
        # Which module each kind of child runs (tests substitute stand-ins).
        self.modules = {ChildKind.WORKER: WORKER_MODULE, ChildKind.FRONT: FRONT_MODULE}

    def worker(self, config: Config, account: AccountConfig) -> ChildHandle:
        path = self._free_path(lambda serial: worker_socket_path(config, account.name, serial))
        spec = worker_spec(config, account, path)
        return ChildHandle(
            kind=ChildKind.WORKER,
            name=account.name,
            module=self.modules[ChildKind.WORKER],
            socket_path=path,
            make_spec=lambda: spec,
            incoming=WorkerReply,
            template=msgspec.structs.replace(spec, socket_path=""),
            timings=_timings(config),
            on_transition=self._on_transition,
            on_pong=self._on_pong,
        )

    def front(self, config: Config, index: int) -> ChildHandle:
        path = self._free_path(lambda serial: front_socket_path(config, index, serial))
        template: FrontSpec = front_spec(config, index, path, [], keys=[], limits_column=0)
        self._claim_key_column(path)

        def make_spec() -> FrontSpec:  # the worker set and key table as they are at each spawn
            keys, column = self._front_keys(path)
            return msgspec.structs.replace(
                template, workers=self._worker_refs(), keys=keys, limits_column=column
            )

        return ChildHandle(
            kind=ChildKind.FRONT,
            name=f"front-{index}",
            module=self.modules[ChildKind.FRONT],
            socket_path=path,
            make_spec=make_spec,
            incoming=FrontReply,
            template=msgspec.structs.replace(template, socket_path=""),
            timings=_timings(config),
            on_transition=self._on_transition,
        )

    def _free_path(self, path_for: Callable[[int], str]) -> str:
        in_use = self._paths_in_use()
        for serial in range(MAX_SERIALS):
            path = path_for(serial)
            if path not in in_use:
                return path
        raise RuntimeError(f"no free socket path like {path_for(0)}")  # pragma: no cover


def _timings(config: Config) -> Timings:
    server = config.server
    return Timings(ping_interval_s=server.ping_interval_s, ping_timeout_s=server.ping_timeout_s)
