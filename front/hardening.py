"""Runs in the front: defences against malformed or hostile HTTP that aiohttp handles itself.

aiohttp answers some requests before our middleware runs (unparsable requests, `Expect`) and
logs a traceback for each; and a listening socket that closes under SO_REUSEPORT resets the
connections still queued on it. These helpers keep such cases short, quiet and in shape.
"""

from __future__ import annotations

import logging
import socket
import struct

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from front.errors import ApiError, ErrorKind, error_body, flavor_for_path


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

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        expect = request.headers.get("Expect")
        if expect is None or expect.strip().lower() == "100-continue":
            return await inner(request)
        err = ApiError(ErrorKind.BAD_REQUEST, "unsupported Expect header: only 100-continue")
        return web.Response(
            body=error_body(flavor_for_path(request.path), err),
            status=err.status,
            content_type="application/json",
            headers={"Connection": "close"},
        )

    server.request_handler = handle


def accept_queue_length(sock: socket.socket) -> int:
    """Connections the kernel has completed on a listener that we have not accepted yet."""
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    except OSError:
        return 0
    return int(struct.unpack_from("I", info, 24)[0])  # tcpi_unacked: a listener's backlog
