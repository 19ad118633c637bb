"""Runs in the front: fetching the http(s) image URLs a client sent, when the operator allows it.

Off by default (`[limits] fetch_image_urls`): a gateway that fetches URLs its clients name can
be made to reach hosts on its own network (SSRF). When on, every hop is checked before it is
connected to: each address of the host (a literal IP as it is, a name as resolved) must be a
public one, not private, loopback, link-local, shared (CGNAT), multicast, reserved or
unspecified, IPv4 inside IPv6 included; the connection then goes to exactly the addresses that
were checked (pinned), so a second DNS answer cannot swap another one in. Redirects are
followed here, at most MAX_REDIRECTS, each hop checked the same way. The whole body must
arrive within the fetch timeout and be at most MAX_IMAGE_BYTES, and it must then be a PNG,
JPEG, GIF or WebP by its magic bytes. A failure is the client's: 400 (413 when too large),
naming the URL's host, never the whole URL (it may carry a token).
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import socket
from collections.abc import Callable
from urllib.parse import urljoin, urlsplit

import aiohttp
import msgspec
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from front.errors import ApiError, ErrorKind
from front.images import ALLOWED_TYPES, MAX_IMAGE_BYTES, sniff
from front.plan import ChatPlan
from protocol.chat import ImageInput

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
MAX_REDIRECTS = 3
REDIRECTS = frozenset({301, 302, 303, 307, 308})
CHUNK_BYTES = 64 * 1024


def is_public(address: IpAddress) -> bool:
    """A globally routable unicast address (the IPv4 inside a mapped/6to4 IPv6 one checked)."""
    if isinstance(address, ipaddress.IPv6Address):
        inner = address.ipv4_mapped or address.sixtofour
        if inner is not None:
            return is_public(inner)
    return address.is_global and not address.is_multicast


class PinnedResolver(AbstractResolver):
    """Answers aiohttp only with the addresses this module checked: it never resolves itself."""

    def __init__(self) -> None:
        self.pinned: dict[tuple[str, int], list[ResolveResult]] = {}

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        try:
            return self.pinned[(host, port)]
        except KeyError:
            raise OSError(f"{host}:{port} was not checked") from None

    async def close(self) -> None:
        return None


class ImageFetcher:
    """Fetches image URLs under the limits above; `allowed` decides which addresses may be used."""

    def __init__(
        self, timeout_s: float, *, allowed: Callable[[IpAddress], bool] = is_public
    ) -> None:
        self.timeout_s = timeout_s
        self.allowed = allowed

    async def fetch(self, url: str, param: str) -> ImageInput:
        host = urlsplit(url).hostname or "?"
        resolver = PinnedResolver()
        connector = aiohttp.TCPConnector(resolver=resolver, use_dns_cache=False)
        try:
            async with (
                aiohttp.ClientSession(connector=connector) as session,
                asyncio.timeout(self.timeout_s),
            ):
                data = await self._follow(session, resolver, url, param)
        except TimeoutError:
            problem = f"image URL on {host} did not answer within {self.timeout_s:g}s"
            raise _bad(problem, param) from None
        except (aiohttp.ClientError, OSError) as exc:
            problem = f"image URL on {host} could not be fetched ({type(exc).__name__})"
            raise _bad(problem, param) from None
        media_type = sniff(data)
        if not media_type:
            allowed = ", ".join(ALLOWED_TYPES)
            raise _bad(
                f"image URL on {host} is not an image of a supported type ({allowed})", param
            )
        return ImageInput(media_type=media_type, data_b64=base64.b64encode(data).decode())

    async def _follow(
        self, session: aiohttp.ClientSession, resolver: PinnedResolver, url: str, param: str
    ) -> bytes:
        for _hop in range(MAX_REDIRECTS + 1):
            host = await self._check(resolver, url, param)
            async with session.get(url, allow_redirects=False) as response:
                if response.status in REDIRECTS and "Location" in response.headers:
                    url = urljoin(url, response.headers["Location"])
                    continue
                if response.status != 200:
                    raise _bad(f"image URL on {host} answered HTTP {response.status}", param)
                return await _body(response, host, param)
        raise _bad(f"image URL redirected more than {MAX_REDIRECTS} times", param)

    async def _check(self, resolver: PinnedResolver, url: str, param: str) -> str:
        """Check (and pin) every address of the URL's host; raises 400 for any refused one."""
        parts = URL(url)  # as aiohttp will see it: the host IDNA-encoded, the port filled in
        host, port = parts.raw_host or "", parts.port
        if parts.scheme not in ("http", "https") or not host or port is None:
            raise _bad("image URLs must be http(s), also after redirects", param)
        addresses = await _addresses(host, port)
        refused = [a for a in addresses if not self.allowed(a)]
        if refused or not addresses:
            raise _bad(
                f"image URL host {host} resolves to an address this gateway does not fetch from "
                "(private, loopback, link-local or otherwise not public)",
                param,
            )
        if _literal(host) is None:
            resolver.pinned[(host, port)] = [_result(host, a, port) for a in addresses]
        return host


async def _addresses(host: str, port: int) -> list[IpAddress]:
    literal = _literal(host)
    if literal is not None:
        return [literal]
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    found: list[IpAddress] = []
    for _family, _kind, _proto, _name, address in infos:
        ip = ipaddress.ip_address(str(address[0]).split("%", 1)[0])
        if ip not in found:
            found.append(ip)
    return found


def _literal(host: str) -> IpAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def _result(host: str, address: IpAddress, port: int) -> ResolveResult:
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    return ResolveResult(
        hostname=host,
        host=str(address),
        port=port,
        family=family,
        proto=0,
        flags=socket.AI_NUMERICHOST,
    )


async def _body(response: aiohttp.ClientResponse, host: str, param: str) -> bytes:
    too_large = ApiError(
        ErrorKind.TOO_LARGE,
        f"the image at {host} is larger than {MAX_IMAGE_BYTES} bytes",
        param=param,
    )
    if (response.content_length or 0) > MAX_IMAGE_BYTES:
        raise too_large
    data = bytearray()
    async for chunk in response.content.iter_chunked(CHUNK_BYTES):
        data += chunk
        if len(data) > MAX_IMAGE_BYTES:
            raise too_large
    return bytes(data)


def _bad(message: str, param: str) -> ApiError:
    return ApiError(ErrorKind.BAD_REQUEST, message, param=param)


async def fetch_url_images(plan: ChatPlan, fetcher: ImageFetcher, budget_bytes: int) -> None:
    """Replace every image that is only a URL, in both forms of the plan, by its fetched bytes.

    The request's images may then hold at most `budget_bytes` of base64 together (the size of
    a request body the gateway accepts), so a request never grows past what a body could carry.
    """
    urls = {image.url for turn in plan.turns for image in turn.images if not image.data_b64}
    if not urls:
        return
    try:
        async with asyncio.TaskGroup() as group:
            tasks = {url: group.create_task(fetcher.fetch(url, "messages")) for url in urls}
    except* ApiError as failed:
        raise failed.exceptions[0] from None
    fetched = {url: task.result() for url, task in tasks.items()}
    total = sum(
        len(fetched[image.url].data_b64) if not image.data_b64 else len(image.data_b64)
        for turn in plan.turns
        for image in turn.images
    )
    if total > budget_bytes:
        raise ApiError(
            ErrorKind.TOO_LARGE,
            f"the request's images come to {total} bytes of base64, over the {budget_bytes} a "
            "request may carry ([limits] max_body_bytes)",
            param="messages",
        )

    def swap(images: list[ImageInput]) -> list[ImageInput]:
        return [fetched.get(image.url, image) if not image.data_b64 else image for image in images]

    plan.turns = [
        msgspec.structs.replace(turn, images=swap(turn.images)) if turn.images else turn
        for turn in plan.turns
    ]
    plan.messages = [
        msgspec.structs.replace(message, images=swap(message.images)) if message.images else message
        for message in plan.messages
    ]
