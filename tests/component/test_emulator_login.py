"""lingma-emulator login: browser page, callback, cache/user format, work-dir portability."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import aiohttp
import pytest
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from playwright.async_api import async_playwright

from tests.component.emulator_support import Emulator, RpcClient, connect, short_dir, start_emulator
from tests.helpers import ChildProcesses

pytestmark = pytest.mark.component

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
USERS = {"LINGMA_EMULATOR_USERS": "demo:demo,alice@example.com:s3cret:x"}


@pytest.fixture(scope="module")
def tmp_root() -> Iterator[Path]:
    root = short_dir()
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def emu(tmp_root: Path) -> Iterator[Emulator]:
    registry = ChildProcesses()
    try:
        yield start_emulator(registry, tmp_root / "main", env=USERS)
    finally:
        registry.kill_all()


@pytest.fixture
async def client(emu: Emulator) -> AsyncIterator[RpcClient]:
    async with aiohttp.ClientSession() as http:
        rpc = await connect(http, emu.ws_url)
        await rpc.call("auth/logout")  # every test starts logged out
        yield rpc
        await rpc.close()


def decrypt_user_file(work_dir: Path) -> dict[str, object]:
    """Independent reading of cache/user: base64(AES-128-CBC), key = IV = cache/id[:16]."""
    key = (work_dir / "cache" / "id").read_text().strip()[:16].encode()
    raw = base64.b64decode((work_dir / "cache" / "user").read_text())
    decryptor = Cipher(algorithms.AES(key), modes.CBC(key)).decryptor()
    unpadder = padding.PKCS7(128).unpadder()
    plain = unpadder.update(decryptor.update(raw) + decryptor.finalize()) + unpadder.finalize()
    return dict(json.loads(plain))


async def test_browser_login_through_the_page(emu: Emulator, client: RpcClient) -> None:
    assert (await client.call("auth/status"))["status"] == 1
    assert await client.call("config/queryModels") == {}
    login = await client.call("auth/login")
    assert login["success"] is True
    url = urlparse(login["url"])
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    assert (url.scheme, url.netloc, url.path) == (
        "http",
        f"127.0.0.1:{emu.http_port}",
        "/lingma/login",
    )
    assert len(query["nonce"]) == 32 and query["state"] == "2-" + query["nonce"]
    assert query["port"] == str(emu.http_port) and query["challenge_method"] == "S256"
    assert query["machine_id"] == (emu.work_dir / "cache" / "id").read_text().strip()

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS
        )
        page = await browser.new_page()
        await page.goto(login["url"])
        assert urlparse(page.url).path == "/login/login.htm"
        await page.fill("#fm-login-id", "alice@example.com")
        await page.fill("#fm-login-password", "wrong")
        await page.click("#fm-login-submit")
        await page.wait_for_selector(".login-error")
        assert (await client.call("auth/status"))["status"] == 1
        await page.fill("#fm-login-id", "alice@example.com")
        await page.fill("#fm-login-password", "s3cret:x")
        await page.click("#fm-login-submit")
        await page.wait_for_url("**/auth/callback?**")
        assert "Login successful" in await page.inner_text("#result-title")
        callback_url = page.url
        await browser.close()

    callback = parse_qs(urlparse(callback_url).query)
    assert callback["state"] == [query["state"]] and "auth" in callback and "token" in callback
    status = await client.call("auth/status")
    assert status["status"] == 2 and status["whitelist"] == 3
    assert status["name"] == "alice@example.com"
    assert status["token"].startswith("pt-") and status["refreshToken"].startswith("rt-")
    record = decrypt_user_file(emu.work_dir)
    assert (
        record["name"] == "alice@example.com" and record["security_oauth_token"] == status["token"]
    )
    models = await client.call("config/queryModels")
    assert set(models) == {"assistant", "chat", "developer", "inline", "quest"}
    keys = {item["key"] for item in models["chat"]}
    assert keys >= {"auto", "dashscope_qwen3_coder", "dashscope_qwen_plus_20250428_thinking",
                    "dashscope_qwen_max_latest", "kmodel", "mmodel"}  # fmt: skip
    thinking = next(i for i in models["chat"] if i["key"].endswith("_thinking"))
    assert thinking["isReasoning"] is True and thinking["format"] == "openai"

    async with aiohttp.ClientSession() as http, http.get(callback_url) as replay:
        assert replay.status == 400  # the nonce is single-use
        assert "Invalid login nonce or consumed, ignore" in await replay.text()
    assert await client.call("auth/logout") == {"success": True}
    assert (await client.call("auth/status"))["status"] == 1
    assert not (emu.work_dir / "cache" / "user").exists()
    assert await client.call("config/queryModels") == {}


async def test_generate_url_and_v1_callback(emu: Emulator, client: RpcClient) -> None:
    generated = await client.call("login/generateUrl")
    assert generated["challengeMethod"] == "S256" and generated["success"] is True
    assert f"nonce={generated['nonce']}" in generated["loginUrl"]
    async with aiohttp.ClientSession() as http:
        bad = f"{emu.http_url}/auth/callback?state=2-{'0' * 32}&auth=x&token=y"
        async with http.get(bad) as response:
            assert response.status == 400
        v1 = f"{emu.http_url}/auth/callback"
        params = {"state": generated["nonce"], "uid": "123", "aid": "456", "name": "v1user"}
        async with http.get(v1, params=params) as response:
            assert response.status == 200
    status = await client.call("auth/status")
    assert (status["status"], status["name"], status["id"], status["accountId"]) == (
        2, "v1user", "123", "456",
    )  # fmt: skip


async def test_refresh_token_rotates_and_pushes(client: RpcClient) -> None:
    refused = await client.call("auth/refreshToken", {})
    assert refused["success"] is False and refused["errorCode"]
    assert await client.call("auth/device_login", {"username": "bob", "userId": "77"}) == {
        "success": True
    }
    before = await client.call("auth/status")
    refreshed = await client.call("auth/refreshToken", {"refreshToken": before["refreshToken"]})
    assert refreshed["success"] is True and refreshed["uid"] == "77"
    after = await client.call("auth/status")
    assert after["token"] != before["token"] and after["expireTime"] == refreshed["tokenExpireTime"]
    sync = await client.wait_for(lambda e: e["method"] == "auth/syncTokenUpdate")
    assert sync["params"]["token"] == after["token"] and isinstance(sync["id"], int)


async def test_copied_work_dir_stays_logged_in_copy_data_dir_does_not(
    children: ChildProcesses, tmp_root: Path
) -> None:
    source_dir = tmp_root / "src"
    source = start_emulator(children, source_dir)
    async with aiohttp.ClientSession() as http:
        rpc = await connect(http, source.ws_url)
        await rpc.call("auth/device_login", {"username": "carol"})
        await rpc.call("config/updateEndpoint", {"endpoint": "https://dedicated.example"})
        original = await rpc.call("auth/status")
        await rpc.close()
        shutil.copytree(source_dir, tmp_root / "clone")
        clone = start_emulator(children, tmp_root / "clone")
        copied = start_emulator(
            children,
            tmp_root / "fresh",
            extra_args=["--copyDataDir", str(source_dir)],
            env={"LINGMA_EMULATOR_NONCE_TTL_S": "0"},
        )
        rpc = await connect(http, clone.ws_url)
        status = await rpc.call("auth/status")
        assert (status["status"], status["token"], status["name"]) == (
            2,
            original["token"],
            "carol",
        )
        assert await rpc.call("config/getEndpoint") == {"endpoint": "https://dedicated.example"}
        await rpc.close()
        rpc = await connect(http, copied.ws_url)
        assert (await rpc.call("auth/status"))["status"] == 1
        nonce = (await rpc.call("login/generateUrl"))["nonce"]  # expires at once (TTL 0)
        v1 = {"state": nonce, "uid": "1", "name": "x"}
        async with http.get(f"{copied.http_url}/auth/callback", params=v1) as response:
            assert response.status == 400
        assert (await rpc.call("auth/status"))["status"] == 1
        await rpc.close()
    log = (tmp_root / "fresh" / "logs" / "lingma.log").read_text()
    assert "No cached user info, please login." in log
    status_cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "emulator",
            "status",
            "-o",
            "json",
            "--workDir",
            str(tmp_root / "clone"),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(status_cli.stdout)["logged_in"] is True
