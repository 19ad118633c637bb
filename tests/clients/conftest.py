"""Fixtures for the SDK tests: gateways (two emulated accounts + a front) for the session.

`gw` is the runtime-backend gateway; a test or module that runs on both backends parametrizes
it indirectly with BACKENDS (`@pytest.mark.parametrize("gw", BACKENDS, indirect=True)`), and
then also gets the cloud-backend gateway (its accounts chat through the emulator's cloud API).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import anthropic
import openai
import pytest

from protocol.limits_table import LimitsTable
from protocol.vocabulary import Backend
from tests.harness import DirectGateway, start_gateway
from tests.helpers import ChildProcesses

BACKENDS = [Backend.RUNTIME.value, Backend.CLOUD.value]
CLOUD_WORKERS = {
    "backend": Backend.CLOUD,
    "env": {"LINGMA_EMULATOR_CLOUD": "1", "LINGMA_EMULATOR_CLOUD_REASONING": "1"},
}


@pytest.fixture(scope="session")
def gateway() -> Iterator[DirectGateway]:
    root = Path(tempfile.mkdtemp(prefix="lgw-cl-", dir="/tmp"))
    children = ChildProcesses()
    limits = root / "key-limits.shm"  # what the supervisor would create (test_key_limits_sdk)
    LimitsTable.create(str(limits), rows=8, columns=2).close()
    try:
        yield start_gateway(
            children,
            root,
            workers=2,
            model_aliases={"house-model": "auto"},
            limits_table=str(limits),
        )
    finally:
        children.kill_all()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def cloud_gateway() -> Iterator[DirectGateway]:
    root = Path(tempfile.mkdtemp(prefix="lgw-cc-", dir="/tmp"))
    children = ChildProcesses()
    try:
        yield start_gateway(
            children,
            root,
            workers=2,
            worker_overrides=CLOUD_WORKERS,
            model_aliases={"house-model": "auto"},
        )
    finally:
        children.kill_all()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def gw(request: pytest.FixtureRequest) -> DirectGateway:
    """A shared gateway (runtime backend unless parametrized) with no emulator script."""
    backend = getattr(request, "param", Backend.RUNTIME.value)
    name = "cloud_gateway" if backend == Backend.CLOUD.value else "gateway"
    gateway: DirectGateway = request.getfixturevalue(name)
    gateway.set_script([])
    gateway.wait_ready()
    return gateway


def is_cloud(gateway: DirectGateway) -> bool:
    return any(w.spec.backend is Backend.CLOUD for w in gateway.workers)


@pytest.fixture
def oai(gw: DirectGateway) -> Iterator[openai.OpenAI]:
    client = openai.OpenAI(
        base_url=f"{gw.base_url}/v1", api_key=gw.api_key, max_retries=0, timeout=30
    )
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def claude(gw: DirectGateway) -> Iterator[anthropic.Anthropic]:
    client = anthropic.Anthropic(
        base_url=gw.base_url, api_key=gw.api_key, max_retries=0, timeout=30
    )
    try:
        yield client
    finally:
        client.close()
