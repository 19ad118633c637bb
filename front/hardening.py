"""Runs in the front: defences against malformed or hostile HTTP that aiohttp handles itself.

aiohttp answers some requests before our middleware runs (unparsable requests, `Expect`) and
logs a traceback for each; and a listening socket that closes under SO_REUSEPORT resets the
connections still queued on it. These helpers keep such cases short, quiet and in shape.
"""

from __future__ import annotations

import logging
import socket
import struct
from collections.abc import Awaitable

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler

from front.errors import (
    ApiError,
    ErrorKind,
    any_api_error_body,
    error_body,
    flavor_for_path,
)

# aiohttp's own error replies, by status: a request it could not parse (400), a handler that
# timed out (504) or raised (500). Our handlers turn their errors into ApiError themselves.
_BUILTIN_ERRORS = {400: ErrorKind.BAD_REQUEST, 504: ErrorKind.TIMEOUT}


class OneLineBadRequests(logging.Filter):
    """aiohttp logs a traceback for every request it cannot parse (400 before any handler
    runs) and for a body it cannot decode while discarding it after the reply: one line
    without the traceback is enough, and a hostile client cannot flood the journal."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError | web.RequestPayloadError):
            record.msg, record.args = "malformed HTTP request rejected: %s", (str(exc),)
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def reject_unknown_expect(server: web.Server) -> None:
    """Answer an `Expect` other than 100-continue with a 400 in the API's shape.

    aiohttp handles `Expect` before any middleware runs: a plain-text 417, or a 500 when the
    value is not UTF-8. Only 100-continue means anything to an HTTP/1.1 server.
    """
    inner = server.request_handler

    # A plain function, not a coroutine: an accepted request is aiohttp's own awaitable, so no
    # frame of ours stays suspended for as long as a stream is open (~300 B per open stream).
    def handle(request: web.BaseRequest) -> Awaitable[web.StreamResponse]:
        expect = request.headers.get("Expect")
        if expect is None or expect.strip().lower() == "100-continue":
            return inner(request)
        return _refuse_expect(request)

    server.request_handler = handle


async def _refuse_expect(request: web.BaseRequest) -> web.StreamResponse:
    err = ApiError(ErrorKind.BAD_REQUEST, "unsupported Expect header: only 100-continue")
    return web.Response(
        body=error_body(flavor_for_path(request.path), err),
        status=err.status,
        content_type="application/json",
        headers={"Connection": "close"},
    )


class ShapedErrorHandler(RequestHandler):
    """aiohttp's connection handler, with its built-in error replies as JSON in the API's shape.

    aiohttp answers an unparsable request (bad request line, bad header, oversized line)
    before any handler or middleware runs, with plain text that echoes the offending bytes.
    """

    __slots__ = ()

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        super().handle_error(request, status, exc, message)  # logging, "already sent" guard
        kind = _BUILTIN_ERRORS.get(status, ErrorKind.INTERNAL)
        if isinstance(exc, HttpProcessingError):
            # No path can be trusted from a request that is not HTTP: one body both shapes parse.
            err = ApiError(kind, f"malformed HTTP request: {_reason(exc)}")
            body = any_api_error_body(err, code="malformed_http_request")
        else:
            err = ApiError(kind, "the request could not be completed; see the gateway's log")
            body = error_body(flavor_for_path(request.path), err)
        response = web.Response(status=status, body=body, content_type="application/json")
        response.force_close()
        return response


def _reason(exc: HttpProcessingError) -> str:
    """aiohttp's parser message without the request bytes it quotes after the colon."""
    text = exc.message if isinstance(exc.message, str) else str(exc)
    return text.split(":", 1)[0].split("\n", 1)[0].strip()[:120] or "unparsable request"


class ShapedErrorServer(web.Server):
    """Builds `ShapedErrorHandler`s; everything else is aiohttp's Server."""

    def __call__(self) -> RequestHandler:
        return ShapedErrorHandler(self, loop=self._loop, **self._kwargs)


class FrontRunner(web.AppRunner):
    """An AppRunner whose server shapes aiohttp's built-in error replies (see above)."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # AppRunner builds a plain Server through Application; the subclass only overrides
        # how connection handlers are made, so switching the class keeps all its state.
        server.__class__ = ShapedErrorServer
        return server


def accept_queue_length(sock: socket.socket) -> int:
    """Connections the kernel has completed on a listener that we have not accepted yet."""
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    except OSError:
        return 0
    return int(struct.unpack_from("I", info, 24)[0])  # tcpi_unacked: a listener's backlog
