"""Runs in the supervisor (server) and in the `lingma-gw` CLI (client): the control socket.

One request per connection: the client connects to `<runtime_dir>/control.sock` (0600), sends
one framed `ControlRequest`, reads one framed `ControlReply`, and both sides close. A frame that
does not decode, or a newer `api_version`, gets a `ErrorReply` instead of a dropped line.
Client failures are classified (missing / permission / refused / timeout / protocol) so the
CLI can print a precise message and an LSB exit code.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

from protocol.control_socket import ControlReply, ControlRequest, ErrorReply
from protocol.framing import (
    FrameDecodeError,
    FramedStream,
    FrameError,
    open_framed,
    start_unix_server,
)
from protocol.version import API_VERSION
from protocol.vocabulary import ErrorCode

log = logging.getLogger(__name__)

DEFAULT_RUNTIME_DIR = "/run/lingma-gw"
SOCKET_NAME = "control.sock"
READ_REQUEST_TIMEOUT_S = 5.0

ControlHandler = Callable[[Any], Awaitable[Any]]


class ControlServer:
    """Serves the control socket; `handler` maps one request to one reply."""

    def __init__(self, path: str, handler: ControlHandler) -> None:
        self.path = path
        self._handler = handler
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        self._server = await start_unix_server(self.path, self._serve)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._connections):
                task.cancel()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        stream: FramedStream[Any, Any] = FramedStream(reader, writer, ControlRequest)
        try:
            reply = await self._reply_for(stream)
            if reply is not None:
                with contextlib.suppress(FrameError, OSError):
                    await stream.send(reply)
        finally:
            await stream.close()
            if task is not None:
                self._connections.discard(task)

    async def _reply_for(self, stream: FramedStream[Any, Any]) -> Any:
        try:
            async with asyncio.timeout(READ_REQUEST_TIMEOUT_S):
                request = await stream.recv()
        except FrameDecodeError as exc:
            return ErrorReply(code=ErrorCode.BAD_FRAME, message=f"undecodable request: {exc}")
        except (FrameError, OSError, TimeoutError):
            return None  # the peer left or never spoke: nobody to answer
        if request.api_version != API_VERSION:
            return ErrorReply(
                code=ErrorCode.UNSUPPORTED,
                message=f"api_version {request.api_version} unsupported (server speaks "
                f"{API_VERSION}): use the lingma-gw CLI of the same version",
            )
        try:
            return await self._handler(request)
        except Exception:
            log.exception("control request %s failed", type(request).__name__)
            return ErrorReply(code=ErrorCode.INTERNAL, message="internal error (see the log)")


# --------------------------------------------------------------------------- client


class Unreachable(enum.Enum):
    MISSING = "missing"
    PERMISSION = "permission"
    REFUSED = "refused"
    TIMEOUT = "timeout"
    PROTOCOL = "protocol"


class ControlUnavailable(Exception):
    def __init__(self, kind: Unreachable, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def socket_path(
    explicit: str | None, config_runtime_dir: str | None, environ: dict[str, str]
) -> str:
    """--socket, else $LINGMA_GW_RUNTIME_DIR, else the config's runtime_dir, else /run/lingma-gw."""
    if explicit:
        return explicit
    env_dir = environ.get("LINGMA_GW_RUNTIME_DIR", "")
    if env_dir:
        return os.path.join(env_dir, SOCKET_NAME)
    if config_runtime_dir:
        return os.path.join(config_runtime_dir, SOCKET_NAME)
    return os.path.join(DEFAULT_RUNTIME_DIR, SOCKET_NAME)


async def request(path: str, message: Any, timeout: float = 10.0) -> ControlReply:
    """Send one control request and return the reply; raises ControlUnavailable."""
    try:
        stream = await open_framed(path, ControlReply, timeout=timeout)
    except FileNotFoundError:
        raise ControlUnavailable(
            Unreachable.MISSING,
            f"control socket {path} does not exist: lingma-gw is not running "
            "(or pass --socket / set LINGMA_GW_RUNTIME_DIR)",
        ) from None
    except PermissionError:
        raise ControlUnavailable(
            Unreachable.PERMISSION,
            f"permission denied on {path}: run this as the service user (lingma-gw) or root",
        ) from None
    except ConnectionRefusedError:
        raise ControlUnavailable(
            Unreachable.REFUSED,
            f"connection refused on {path}: lingma-gw is not running (stale socket)",
        ) from None
    except TimeoutError:
        raise ControlUnavailable(
            Unreachable.TIMEOUT, f"timed out connecting to {path} after {timeout:g}s"
        ) from None
    except OSError as exc:
        raise ControlUnavailable(Unreachable.PROTOCOL, f"cannot connect to {path}: {exc}") from None
    try:
        async with asyncio.timeout(timeout):
            await stream.send(message)
            await stream.writer.drain()
            reply: ControlReply = await stream.recv()
            return reply
    except TimeoutError:
        raise ControlUnavailable(
            Unreachable.TIMEOUT, f"no reply from lingma-gw on {path} within {timeout:g}s"
        ) from None
    except (FrameError, OSError) as exc:
        raise ControlUnavailable(
            Unreachable.PROTOCOL, f"bad or missing reply on {path}: {exc}"
        ) from None
    finally:
        await stream.close()
