"""A front or worker imports only what every such process uses (issue 18: idle RSS).

Playwright (auto-login), the cloud modules with `cryptography` (cloud accounts) and
aiomultiprocess (the supervisor's side of spawning) are imported where they are needed, never
when a child starts; the emulator, the bench and the tests never are. Checked in a fresh
interpreter, importing what a spawned child imports: its entry module, then its component.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit

NEVER_AT_START = ("playwright", "cryptography", "aiomultiprocess", "worker.cloud")
NEVER_IN_PRODUCTION = ("emulator", "bench", "tests", "pytest")


def modules_after_importing(*modules: str) -> set[str]:
    code = f"import sys, {', '.join(modules)}; print('\\n'.join(sys.modules))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    return set(done.stdout.split())


@pytest.mark.parametrize("component", ["worker.worker", "front.app"])
def test_a_child_starts_without_what_only_some_children_use(component: str) -> None:
    loaded = modules_after_importing("supervisor.child_entry", component)
    assert component in loaded
    unwanted = {
        name
        for name in loaded
        for prefix in NEVER_AT_START + NEVER_IN_PRODUCTION
        if name == prefix or name.startswith(prefix + ".")
    }
    assert not unwanted
