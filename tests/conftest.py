"""Fixtures shared by every test layer: short socket directories, free ports, child cleanup."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import ChildProcesses


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    """A short private directory: Unix socket paths must stay under 108 bytes."""
    path = Path(tempfile.mkdtemp(prefix="lgw-", dir="/tmp"))
    path.chmod(0o700)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def children() -> Iterator[ChildProcesses]:
    """Start subprocesses through this; every one (and its process group) is killed afterwards."""
    registry = ChildProcesses()
    try:
        yield registry
    finally:
        registry.kill_all()
