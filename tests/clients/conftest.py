"""Fixtures for the SDK tests: one gateway (two emulated accounts + a front) for the session."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import anthropic
import openai
import pytest

from tests.harness import Gateway, start_gateway
from tests.helpers import ChildProcesses


@pytest.fixture(scope="session")
def gateway() -> Iterator[Gateway]:
    root = Path(tempfile.mkdtemp(prefix="lgw-cl-", dir="/tmp"))
    children = ChildProcesses()
    try:
        yield start_gateway(children, root, workers=2, model_aliases={"house-model": "auto"})
    finally:
        children.kill_all()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def gw(gateway: Gateway) -> Gateway:
    """The shared gateway with no emulator script in force."""
    gateway.set_script([])
    gateway.wait_ready()
    return gateway


@pytest.fixture
def oai(gw: Gateway) -> Iterator[openai.OpenAI]:
    client = openai.OpenAI(
        base_url=f"{gw.base_url}/v1", api_key=gw.api_key, max_retries=0, timeout=30
    )
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def claude(gw: Gateway) -> Iterator[anthropic.Anthropic]:
    client = anthropic.Anthropic(
        base_url=gw.base_url, api_key=gw.api_key, max_retries=0, timeout=30
    )
    try:
        yield client
    finally:
        client.close()
