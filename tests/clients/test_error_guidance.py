"""The mistakes users make first, as the SDKs report them: each error says what to do.

Wrong key, a base URL without (or with) /v1, an unknown model, and a gateway whose only
account is not logged in (503 + Retry-After, pointing at `lingma-gw status` / `login`).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from tests.component.worker_support import make_spec, start_worker
from tests.harness import API_KEY, DirectGateway, front_spec, start_front
from tests.helpers import ChildProcesses, wait_until

pytestmark = pytest.mark.clients

HELLO: Any = [{"role": "user", "content": "hello"}]


def test_wrong_key_names_the_setting(gw: DirectGateway) -> None:
    client = openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        client.chat.completions.create(model="auto", messages=HELLO)
    assert "api_keys" in str(info.value) and "API_KEYS" in str(info.value)


def test_base_url_without_v1_is_explained(gw: DirectGateway) -> None:
    client = openai.OpenAI(base_url=gw.base_url, api_key=gw.api_key, max_retries=0)
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="auto", messages=HELLO)
    assert "unknown path /chat/completions" in str(info.value) and "/v1" in str(info.value)
    claude = anthropic.Anthropic(base_url=f"{gw.base_url}/v1", api_key=gw.api_key, max_retries=0)
    with pytest.raises(anthropic.NotFoundError) as doubled:
        claude.messages.create(model="auto", max_tokens=16, messages=HELLO)
    assert "no /v1" in str(doubled.value)


def test_unknown_model_lists_the_choices(gw: DirectGateway) -> None:
    client = openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key=gw.api_key, max_retries=0)
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="qwen-nonexistent", messages=HELLO)
    message = str(info.value)
    assert "unknown model 'qwen-nonexistent'" in message and "auto" in message


@pytest.fixture(scope="module")
def logged_out_gateway() -> Iterator[str]:
    """One worker that never logs in, behind a front: what a fresh install looks like."""
    root = Path(tempfile.mkdtemp(prefix="lgw-lo-", dir="/tmp"))
    children = ChildProcesses()
    try:
        (root / "w0").mkdir()
        worker = start_worker(children, make_spec(root / "w0", name="acct-new"), root / "w0")
        spec = front_spec(root, [worker])
        front = start_front(children, root, spec)
        base_url = f"http://127.0.0.1:{spec.port}"
        probe = openai.OpenAI(base_url=f"{base_url}/v1", api_key="x", max_retries=0, timeout=2)

        def answering() -> bool:
            assert front.poll() is None, (root / "front.log").read_text()
            try:
                probe.models.list()
            except openai.APIConnectionError:
                return False
            except openai.APIStatusError:
                return True
            return True

        wait_until(answering, 20, "the front to answer")
        probe.close()
        yield base_url
    finally:
        children.kill_all()
        shutil.rmtree(root, ignore_errors=True)


def test_no_logged_in_account_says_what_to_do(logged_out_gateway: str) -> None:
    client = openai.OpenAI(base_url=f"{logged_out_gateway}/v1", api_key=API_KEY, max_retries=0)
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="auto", messages=HELLO)
    assert info.value.status_code == 503
    assert info.value.response.headers["Retry-After"] == "5"
    message = str(info.value)
    assert "no READY account" in message
    assert "lingma-gw status" in message and "lingma-gw login NAME" in message
    claude = anthropic.Anthropic(base_url=logged_out_gateway, api_key=API_KEY, max_retries=0)
    with pytest.raises(anthropic.APIStatusError) as anth:
        claude.messages.create(model="auto", max_tokens=16, messages=HELLO)
    assert anth.value.status_code == 503 and "lingma-gw status" in str(anth.value)
