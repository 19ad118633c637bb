"""The front's image URL fetch against a real HTTP server on loopback (issue 16 item 2).

Loopback is exactly what the fetch must refuse, so each test says which addresses it lets the
fetcher use (`allowed`): the default policy refuses this server, a policy that allows 127.0.0.1
only fetches from it but still refuses a redirect to 127.0.0.2, and the size, time, content and
redirect limits hold either way.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.typedefs import Handler

from front.errors import ApiError, ErrorKind
from front.image_fetch import MAX_REDIRECTS, ImageFetcher, IpAddress
from front.images import MAX_IMAGE_BYTES
from protocol.chat import ImageInput
from tests.component.api_support import client_session, post, running_gateway
from tests.harness import DirectGateway

pytestmark = pytest.mark.component

PNG = b"\x89PNG\r\n\x1a\n" + bytes(100)
LOOPBACK = ipaddress.ip_address("127.0.0.1")


def only_loopback(address: IpAddress) -> bool:
    return address == LOOPBACK


async def slow(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    await response.prepare(request)
    await response.write(PNG[:8])
    await asyncio.Event().wait()  # the rest never comes: the fetch's own timeout ends it
    return response


async def huge(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()  # chunked: no Content-Length to refuse it early
    await response.prepare(request)
    chunk = bytes(256 * 1024)
    for _ in range(MAX_IMAGE_BYTES // len(chunk) + 2):
        await response.write(chunk)
    return response


def app(port_of: dict[str, int]) -> web.Application:
    def redirect_to(target: str) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            raise web.HTTPFound(target.format(port=port_of["port"]))

        return handler

    async def png(request: web.Request) -> web.StreamResponse:
        return web.Response(body=PNG, content_type="image/jpeg")  # a PNG, whatever it says

    async def text(request: web.Request) -> web.StreamResponse:
        return web.Response(text="<html>not an image</html>", content_type="image/png")

    async def loop(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/loop")

    async def missing(request: web.Request) -> web.StreamResponse:
        raise web.HTTPNotFound()

    application = web.Application()
    application.router.add_get("/a.png", png)
    application.router.add_get("/page", text)
    application.router.add_get("/slow", slow)
    application.router.add_get("/huge", huge)
    application.router.add_get("/loop", loop)
    application.router.add_get("/to-named", redirect_to("http://localhost:{port}/a.png"))
    application.router.add_get("/to-other", redirect_to("http://127.0.0.2:{port}/a.png"))
    application.router.add_get("/missing", missing)
    return application


@pytest.fixture
async def base() -> AsyncIterator[str]:
    port_of: dict[str, int] = {}
    runner = web.AppRunner(app(port_of), shutdown_timeout=0.5)  # /slow never ends itself
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port_of["port"] = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port_of['port']}"
    finally:
        await runner.cleanup()


async def refused(fetcher: ImageFetcher, url: str) -> ApiError:
    with pytest.raises(ApiError) as caught:
        await fetcher.fetch(url, "messages[0]")
    assert caught.value.param == "messages[0]"
    return caught.value


async def test_the_default_policy_refuses_loopback(base: str) -> None:
    error = await refused(ImageFetcher(5.0), f"{base}/a.png")
    assert error.kind is ErrorKind.BAD_REQUEST and "not public" in error.message


async def test_an_allowed_address_is_fetched_and_sniffed(base: str) -> None:
    fetched = await ImageFetcher(5.0, allowed=only_loopback).fetch(f"{base}/a.png", "m")
    assert fetched == ImageInput(media_type="image/png", data_b64=fetched.data_b64)
    assert len(fetched.data_b64) > len(PNG)  # base64 of the whole body


async def test_redirects_are_checked_hop_by_hop(base: str) -> None:
    error = await refused(ImageFetcher(5.0, allowed=only_loopback), f"{base}/to-other")
    assert "127.0.0.2" in error.message
    # A name is resolved and every one of its addresses checked: localhost is loopback.
    nowhere = await refused(ImageFetcher(5.0, allowed=lambda _a: False), f"{base}/to-named")
    assert "127.0.0.1" in nowhere.message  # refused before the first hop was even connected
    named = ImageFetcher(5.0, allowed=lambda a: a.is_loopback)
    assert (await named.fetch(f"{base}/to-named", "m")).media_type == "image/png"
    error = await refused(ImageFetcher(5.0, allowed=only_loopback), f"{base}/loop")
    assert f"more than {MAX_REDIRECTS}" in error.message


async def test_size_time_and_content_limits(base: str) -> None:
    fetcher = ImageFetcher(1.0, allowed=only_loopback)
    too_big = await refused(fetcher, f"{base}/huge")
    assert too_big.kind is ErrorKind.TOO_LARGE
    late = await refused(fetcher, f"{base}/slow")
    assert late.kind is ErrorKind.BAD_REQUEST and "within 1s" in late.message
    not_image = await refused(fetcher, f"{base}/page")
    assert "not an image" in not_image.message
    missing = await refused(fetcher, f"{base}/missing")
    assert "HTTP 404" in missing.message
    scheme = await refused(fetcher, "ftp://127.0.0.1/a.png")
    assert "http(s)" in scheme.message


def test_the_front_fetches_only_when_configured() -> None:
    """Through HTTP: off, a URL image has no account to go to; on, the front fetches it under
    its policy, which refuses a loopback address before connecting to it."""
    body = {
        "model": "auto",
        "messages": [{"role": "user", "content": [image_part("http://127.0.0.1:9/a.png")]}],
    }

    async def ask(gateway: DirectGateway) -> tuple[int, Any]:
        async with client_session(gateway) as http:
            status, payload, _ = await post(http, "chat", body)
        return status, payload

    for fetching, needle in ((False, "fetch_image_urls = false"), (True, "not public")):
        with running_gateway("lgw-if-", fetch_image_urls=fetching) as gateway:
            status, payload = asyncio.run(ask(gateway))
        assert status == 400 and needle in payload["error"]["message"], payload


def image_part(url: str) -> dict[str, object]:
    return {"type": "image_url", "image_url": {"url": url}}
