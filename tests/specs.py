"""Specs for tests, built the one way the supervisor builds them: from a config.

Spec Structs have no defaults of their own (protocol/specs.py): a test that needs a spec gets
one from the default config through supervisor/specs.py and overrides what it is about, so a
test's worker runs with exactly the settings an operator's would.
"""

from __future__ import annotations

from typing import Any

import msgspec

from protocol.front_socket import WorkerRef
from protocol.specs import FrontSpec, LoginSpec, WorkerSpec
from supervisor import specs
from supervisor.config import AccountConfig, Config

DEFAULT_CONFIG = Config()


def worker_spec(*, name: str = "acct-a", socket_path: str = "", **overrides: Any) -> WorkerSpec:
    """The default config's spec for account `name`, with `overrides` applied."""
    spec = specs.worker_spec(DEFAULT_CONFIG, AccountConfig(name=name), socket_path)
    return msgspec.structs.replace(spec, **overrides)


def login_spec(**overrides: Any) -> LoginSpec:
    """The default config's login settings, with `overrides` applied."""
    return msgspec.structs.replace(worker_spec().login, **overrides)


def front_spec(
    *,
    index: int = 0,
    socket_path: str = "",
    workers: list[WorkerRef] | None = None,
    **overrides: Any,
) -> FrontSpec:
    """The default config's spec for front `index`, with `overrides` applied."""
    spec = specs.front_spec(
        DEFAULT_CONFIG, index, socket_path, workers or [], keys=[], limits_column=0
    )
    return msgspec.structs.replace(spec, **overrides)
