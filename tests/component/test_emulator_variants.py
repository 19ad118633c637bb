"""lingma-emulator knobs for what the spec leaves open (lingma-protocol.md §13), spoken to with the
spec-written test client: one client at a time, a cancel nobody answers, session/new that hangs
or fails, `statusCode` in the ACP finish, unrelated pushes, and two instances on one work dir."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.component.emulator_support import (
    Emulator,
    RpcClient,
    acp_finished,
    connect,
    logged_in_work_dir,
    short_dir,
    start_emulator,
    write_script,
)
from tests.helpers import ChildProcesses, wait_until_async

pytestmark = pytest.mark.component

KNOBS: dict[str, dict[str, str]] = {
    "default": {},
    "variants": {
        "LINGMA_EMULATOR_SINGLE_CLIENT": "1",
        "LINGMA_EMULATOR_CANCEL_NO_REPLY": "1",
        "LINGMA_EMULATOR_ACP_FINISH_STATUS": "1",
        "LINGMA_EMULATOR_NOISE_MS": "20",
    },
    "hang": {"LINGMA_EMULATOR_SESSION_NEW_HANG": "1"},
    "error": {"LINGMA_EMULATOR_SESSION_NEW_ERROR": "-32050"},
}


@pytest.fixture(scope="module")
def root() -> Iterator[Path]:
    path = short_dir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def emulators(root: Path) -> Iterator[dict[str, Emulator]]:
    registry = ChildProcesses()
    try:
        started = {}
        for name, env in KNOBS.items():
            work_dir = logged_in_work_dir(root / name, "variants")
            started[name] = start_emulator(
                registry, work_dir, env={**env, "LINGMA_EMULATOR_SCRIPT": str(root / "s.json")}
            )
        yield started
    finally:
        registry.kill_all()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def acp_turn(client: RpcClient, request_id: str, text: str) -> tuple[str, dict[str, Any]]:
    """session/new + session/prompt; returns the session id and the prompt's `_meta`."""
    session = (await client.call("session/new", {"cwd": "/w", "mcpServers": []}))["sessionId"]
    meta = {"ai-coding/request-id": request_id}
    prompt = [{"type": "text", "text": text}]
    await client.call("session/prompt", {"sessionId": session, "prompt": prompt, "_meta": meta})
    return session, meta


def finish_data(client: RpcClient, request_id: str) -> dict[str, Any]:
    (event,) = [e for e in client.events if acp_finished(request_id)(e)]
    data: dict[str, Any] = event["params"]["update"]["data"]
    return data


async def test_by_default_the_acp_finish_has_no_status_and_errors_are_worded(
    emulators: dict[str, Emulator], root: Path, http: aiohttp.ClientSession
) -> None:
    write_script(
        root / "s.json",
        [
            {"match": "busy", "error": {"status": 429, "message": "slow down"}},
            {"match": "quota", "error": {"kind": "quota"}},
            {"match": "expired", "error": {"kind": "login"}},
        ],
    )
    client = await connect(http, emulators["default"].ws_url)
    try:
        for request_id, text in (("d-ok", "hi"), ("d-busy", "busy"), ("d-q", "quota")):
            await acp_turn(client, request_id, text)
            await client.wait_for(acp_finished(request_id))
        await acp_turn(client, "d-login", "expired")
        await client.wait_for(acp_finished("d-login"))
        assert finish_data(client, "d-ok") == {"reason": "success", "fullAnswer": ""}
        assert finish_data(client, "d-busy") == {
            "reason": "429 Too Many Requests: slow down",
            "fullAnswer": "",
        }
        quota = finish_data(client, "d-q")["reason"]
        assert quota == '403 Forbidden: {"code":"110","message":"quota exceeded"}'
        login = finish_data(client, "d-login")["reason"]
        assert login == '403 Forbidden: {"code":"105","message":"Login expired"}'
        # Unrelated pushes happen during turns by default (§5.3, §5.4), and nothing else.
        assert client.of("snapshot/syncAll") and not client.of("session/update", "noise")
        assert "another runtime instance" not in emulators["default"].log()
    finally:
        write_script(root / "s.json", [])
        await client.close()


async def test_variants_knob_set(
    emulators: dict[str, Emulator], root: Path, http: aiohttp.ClientSession
) -> None:
    write_script(root / "s.json", [{"match": "forever", "reply": "part", "action": "hang"}])
    first = await connect(http, emulators["variants"].ws_url)
    second = await connect(http, emulators["variants"].ws_url)
    try:

        async def first_closed() -> bool:
            return first.closed

        # SINGLE_CLIENT: the new connection closed the earlier one.
        await wait_until_async(first_closed, 5.0, "the emulator to close the first connection")
        assert not second.closed
        await acp_turn(second, "v-ok", "hello")
        await second.wait_for(acp_finished("v-ok"))
        assert finish_data(second, "v-ok") == {
            "reason": "success",
            "fullAnswer": "",
            "statusCode": 200,  # ACP_FINISH_STATUS
        }
        # NOISE_MS: another session's chunks and syncAlls arrive, addressed to nobody here.
        noise = await second.wait_for(
            lambda e: e["params"].get("sessionId") == "noise-session", timeout=3.0
        )
        assert noise["params"]["update"]["content"]["text"] == "NOISE"
        # CANCEL_NO_REPLY: a cancel sent as a request is never answered, yet stops the turn.
        session, meta = await acp_turn(second, "v-hang", "forever")
        await second.wait_for(lambda e: e["params"].get("step") == "step_end")
        with pytest.raises(TimeoutError):
            await second.request(
                "session/cancel", {"sessionId": session, "_meta": meta}, timeout=1.0
            )
        await second.wait_for(acp_finished("v-hang"))
        assert finish_data(second, "v-hang")["reason"] == "cancelled"
    finally:
        write_script(root / "s.json", [])
        await second.close()


async def test_session_new_can_hang_or_fail(
    emulators: dict[str, Emulator], http: aiohttp.ClientSession
) -> None:
    hang = await connect(http, emulators["hang"].ws_url)
    error = await connect(http, emulators["error"].ws_url)
    try:
        with pytest.raises(TimeoutError):
            await hang.request("session/new", {"cwd": "/w", "mcpServers": []}, timeout=1.0)
        assert await hang.call("ping") == {"success": True}  # the connection still serves
        reply = await error.request("session/new", {"cwd": "/w", "mcpServers": []})
        assert reply["error"]["code"] == -32050
    finally:
        await hang.close()
        await error.close()


async def test_a_second_instance_on_one_work_dir_is_reported(
    emulators: dict[str, Emulator],
) -> None:
    registry = ChildProcesses()
    try:
        twin = start_emulator(registry, emulators["default"].work_dir)
        assert "another runtime instance runs on this work dir" in twin.log()
    finally:
        registry.kill_all()
