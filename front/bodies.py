"""Runs in the front: a request's JSON body into its msgspec Struct, and JSON replies out.

Every way a body can be wrong is a clear 4xx in the API's shape (the middleware renders the
`ApiError`): too large (413, refused before reading when Content-Length says so), too slow
(408), unreadable framing, empty, not JSON, not UTF-8, nested too deeply, or not the schema.
"""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

import msgspec
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from front.context import CONTEXT
from front.errors import ApiError, ErrorKind

T = TypeVar("T")

_json = msgspec.json.Encoder()


def _describe_decode_error(exc: msgspec.DecodeError) -> str:
    if isinstance(exc, msgspec.ValidationError):
        return f"invalid request body: {exc}"
    return f"request body is not valid JSON: {exc}"


async def read_body(request: web.Request, body_type: type[T]) -> T:
    """Read and decode the JSON body into `body_type`; any problem is an ApiError."""
    spec = request.app[CONTEXT].spec
    declared = request.content_length
    if declared is not None and declared > spec.max_body_bytes:
        raise ApiError(ErrorKind.TOO_LARGE, "request body too large")  # before reading any
    try:
        async with asyncio.timeout(spec.body_timeout_s):
            raw = await request.read()
    except TimeoutError:
        raise ApiError(
            ErrorKind.REQUEST_TIMEOUT,
            f"the request body did not arrive within {spec.body_timeout_s:g}s",
        ) from None
    except (web.RequestPayloadError, HttpProcessingError):
        raise ApiError(
            ErrorKind.BAD_REQUEST,
            "the request body cannot be read: bad Content-Encoding or chunked framing",
        ) from None
    if not raw.strip():
        raise ApiError(ErrorKind.BAD_REQUEST, "request body is empty: send a JSON object")
    try:
        return msgspec.json.decode(raw, type=body_type)
    except msgspec.DecodeError as exc:
        raise ApiError(ErrorKind.BAD_REQUEST, _describe_decode_error(exc)) from None
    except RecursionError:
        raise ApiError(ErrorKind.BAD_REQUEST, "request body is nested too deeply") from None
    except UnicodeDecodeError:
        raise ApiError(ErrorKind.BAD_REQUEST, "request body is not valid UTF-8") from None


def json_response(
    payload: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=_json.encode(payload),
        status=status,
        content_type="application/json",
        headers=headers,
    )
