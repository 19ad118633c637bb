"""Shared by supervisor and front: the conversation on a front's Unix socket.

Besides what every child answers (protocol/child_socket.py), a front takes the supervisor's
current worker set (`WorkersUpdate`) and key table (`KeysUpdate`, protocol/keys.py) whenever
they change, so it routes to new workers and accepts new keys without a restart.
"""

from __future__ import annotations

from protocol.chat import Failure
from protocol.child_socket import Drain, Ok, Ping, Pong, Stats, StatsQuery
from protocol.keys import KeysUpdate
from protocol.vocabulary import Base


class WorkerRef(Base, frozen=True, kw_only=True):
    name: str
    socket_path: str


class WorkersUpdate(Base, tag_field="type", tag="workers_update", frozen=True, kw_only=True):
    """The supervisor's current worker set (after spawn, restart or reload)."""

    id: int
    workers: list[WorkerRef]


FrontRequest = Ping | StatsQuery | WorkersUpdate | Drain | KeysUpdate
FrontReply = Pong | Stats | Ok | Failure
