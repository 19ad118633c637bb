"""Unit: the cloud client uses the environment's proxy as `trust_env` would, once per base URL."""

from __future__ import annotations

import pytest

from worker.cloud.client import CloudClient

pytestmark = pytest.mark.unit

BASE = "https://lingma-api.tongyi.aliyun.com"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", "/nonexistent/netrc")
    return monkeypatch


async def test_https_proxy_is_used_with_its_login(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("HTTPS_PROXY", "http://user:secret@proxy.example:3128")
    client = CloudClient(timeout_s=1.0)
    try:
        proxy = client.proxy(BASE)
        assert proxy.url is not None and (proxy.url.host, proxy.url.port) == ("proxy.example", 3128)
        assert proxy.auth is not None and (proxy.auth.login, proxy.auth.password) == (
            "user",
            "secret",
        )
        clean_env.delenv("HTTPS_PROXY")
        assert client.proxy(BASE) == proxy  # looked up once per base URL
    finally:
        await client.close()


async def test_no_proxy_and_no_variable_mean_a_direct_connection(
    clean_env: pytest.MonkeyPatch,
) -> None:
    client = CloudClient(timeout_s=1.0)
    try:
        assert client.proxy(BASE).url is None
        clean_env.setenv("HTTPS_PROXY", "http://proxy.example:3128")
        clean_env.setenv("NO_PROXY", "127.0.0.1,localhost")
        assert client.proxy("http://127.0.0.1:9").url is None
        assert client.proxy(BASE + ":443").url is not None
    finally:
        await client.close()
