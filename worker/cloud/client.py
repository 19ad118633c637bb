"""Runs in the worker: HTTP to Lingma's cloud API — one aiohttp session, signed requests (§14.3).

One `ClientSession` per worker keeps connections alive across chats (no connector cap: every
open stream holds one). Deadlines match the runtime path: connecting and every silence between
two reads are bounded by `rpc_timeout_s`; the caller bounds the whole chat. HTTPS_PROXY /
HTTP_PROXY / NO_PROXY (and ~/.netrc for the proxy's login) are honoured like LP-N, looked up once
per base URL: aiohttp's `trust_env` looks them up in a worker thread on every request, two thread
hand-offs per chat. Non-2xx answers and broken streams become `CloudFailure`s.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any, NamedTuple

import aiohttp
import msgspec
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

from protocol.chat import ImageInput
from worker.cloud.credential import Credential
from worker.cloud.errors import CloudFailure, FailureKind, classify, parse_retry_after
from worker.cloud.signing import signed_headers
from worker.cloud.sse import CloudEvent, SseDecoder, StreamError

CHAT_PATH = "/algo/api/v2/service/pro/sse/agent_chat_generation"
CHAT_QUERY = "?FetchKeys=llm_model_result&AgentId=agent_common"
MODELS_PATH = "/algo/api/v2/model/list"
# L2A uploads under /algo, ZC-RA without it (§14.3 conflict): both are tried, the one that
# answered is remembered.
UPLOAD_PATHS = ("/algo/api/v2/image/upload", "/api/v2/image/upload")
MAX_ERROR_BODY = 64 * 1024
READ_CHUNK = 64 * 1024


def _transport_failure(exc: BaseException, where: str) -> CloudFailure:
    if isinstance(exc, TimeoutError):  # aiohttp's ServerTimeoutError is one too
        return CloudFailure(FailureKind.TIMEOUT, f"cloud {where}: no data for too long")
    if where.endswith("stream"):
        return CloudFailure(FailureKind.CUT, f"the cloud {where} broke off ({type(exc).__name__})")
    return CloudFailure(FailureKind.CUT, f"cloud {where}: connection failed ({type(exc).__name__})")


class Proxy(NamedTuple):
    url: URL | None
    auth: aiohttp.BasicAuth | None


class CloudClient:
    def __init__(self, *, timeout_s: float) -> None:
        self._http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=timeout_s, sock_read=timeout_s),
        )
        self._upload_paths = list(UPLOAD_PATHS)
        self._proxies: dict[str, Proxy] = {}

    def proxy(self, base_url: str) -> Proxy:
        """The environment's proxy for `base_url` (None when there is none or NO_PROXY says so)."""
        found = self._proxies.get(base_url)
        if found is None:
            try:
                found = Proxy(*get_env_proxy_for_url(URL(base_url)))
            except LookupError:
                found = Proxy(None, None)
            self._proxies[base_url] = found
        return found

    async def close(self) -> None:
        await self._http.close()

    def _send(
        self, method: str, base_url: str, target: str, **kwargs: Any
    ) -> aiohttp.client._RequestContextManager:
        proxy = self.proxy(base_url)
        return self._http.request(
            method, base_url + target, proxy=proxy.url, proxy_auth=proxy.auth, **kwargs
        )

    async def _raise_for_status(self, response: aiohttp.ClientResponse, where: str) -> None:
        if response.status < 400:
            return
        try:
            raw = await response.content.read(MAX_ERROR_BODY)
        except (aiohttp.ClientError, TimeoutError):
            raw = b""
        raise classify(
            response.status,
            raw.decode("utf-8", "replace"),
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
            where=where,
        )

    async def get_json(
        self, base_url: str, path: str, credential: Credential, where: str
    ) -> tuple[int, Any]:
        """A signed GET; the decoded JSON body (None if not JSON), raising on status >= 400."""
        headers = signed_headers(credential, path=path, body=b"", accept="application/json")
        try:
            async with self._send("GET", base_url, path, headers=headers) as response:
                await self._raise_for_status(response, where)
                raw = await response.read()
        except aiohttp.ClientError as exc:
            raise _transport_failure(exc, where) from None
        except TimeoutError as exc:
            raise _transport_failure(exc, where) from None
        try:
            return response.status, msgspec.json.decode(raw)
        except msgspec.DecodeError:
            return response.status, None

    async def list_models(self, base_url: str, credential: Credential) -> dict[str, Any]:
        _status, payload = await self.get_json(base_url, MODELS_PATH, credential, "model list")
        if not isinstance(payload, dict):
            raise CloudFailure(
                FailureKind.WRONG_DOMAIN,
                "cloud model list is not a JSON object - the base URL is probably wrong",
            )
        return payload

    @contextlib.asynccontextmanager
    async def chat(
        self, base_url: str, credential: Credential, body: bytes
    ) -> AsyncIterator[AsyncIterator[CloudEvent]]:
        """POST the signed body; yields the stream of decoded events (raises CloudFailure)."""
        headers = signed_headers(credential, path=CHAT_PATH, body=body)
        try:
            response = await self._send(
                "POST", base_url, CHAT_PATH + CHAT_QUERY, data=body, headers=headers
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _transport_failure(exc, "chat") from None
        try:  # a stream left early closes its connection: that is what stops the cloud's answer
            await self._raise_for_status(response, "chat")
            yield self._events(response)
        finally:
            response.release()

    async def _events(self, response: aiohttp.ClientResponse) -> AsyncIterator[CloudEvent]:
        decoder = SseDecoder()
        try:
            async for data in response.content.iter_chunked(READ_CHUNK):
                for event in decoder.feed(data):
                    yield event
            for event in decoder.close():
                yield event
        except StreamError as exc:
            raise CloudFailure(FailureKind.CUT, f"cloud chat: {exc}") from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _transport_failure(exc, "chat stream") from None

    async def upload_image(self, base_url: str, credential: Credential, image: ImageInput) -> str:
        """Upload one image (data URL or the client's URL) → the cloud's image URL (L2A)."""
        uri = f"data:{image.media_type};base64,{image.data_b64}" if image.data_b64 else image.url
        last: CloudFailure | None = None
        for path in list(self._upload_paths):
            try:
                return await self._upload(base_url, path, credential, uri)
            except CloudFailure as exc:
                if exc.kind is not FailureKind.WRONG_DOMAIN:
                    raise
                last = exc
                self._upload_paths.remove(path)
                self._upload_paths.append(path)  # try the other spelling first next time
        assert last is not None
        raise last

    async def _upload(self, base_url: str, path: str, credential: Credential, uri: str) -> str:
        request_id = uuid.uuid4().hex
        body = msgspec.json.encode({"ImageUri": uri, "RequestId": request_id})
        target = f"{path}?request_id={request_id}"
        headers = signed_headers(credential, path=target, body=body, accept="application/json")
        try:
            async with self._send("POST", base_url, target, data=body, headers=headers) as resp:
                await self._raise_for_status(resp, "image upload")
                raw = await resp.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _transport_failure(exc, "image upload") from None
        return _uploaded_url(raw)


def _uploaded_url(raw: bytes) -> str:
    try:
        payload = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        payload = None
    data = payload.get("Data") if isinstance(payload, dict) else None
    url = data.get("ImageUrl") if isinstance(data, dict) and data.get("Success") else None
    if not isinstance(url, str) or not url:
        raise CloudFailure(FailureKind.REJECTED, "cloud image upload did not return an image URL")
    return url
