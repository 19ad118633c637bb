"""Shared by every process: length-prefixed msgpack frames over asyncio streams and Unix sockets.

A frame is a 4-byte big-endian body length followed by a msgpack body. The length is checked
against `MAX_FRAME` before a single body byte is read, so a hostile peer cannot make us allocate.
A body that does not decode leaves the stream in sync (we consumed exactly one frame), so the
receiver can answer with a typed error and keep serving. A receiver reads whatever has arrived
and splits it into frames itself (`FrameParser`), rather than two `readexactly` calls per
frame: a streamed answer arrives as bursts of small frames, and `recv_batch` hands a burst
over in one go.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import socket
import stat
import struct
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

import msgspec

MAX_FRAME = 16 * 1024 * 1024
HEADER = struct.Struct(">I")
READ_SIZE = 256 * 1024  # bytes asked of the socket at once (uvloop reads 256 KiB as well)

In = TypeVar("In")
Out = TypeVar("Out")

_encoder = msgspec.msgpack.Encoder()


class FrameError(Exception):
    """Base for every framing problem; `recoverable` says whether the stream is still in sync."""

    recoverable = False


class FrameTooLarge(FrameError):
    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"frame of {size} bytes exceeds the {limit}-byte limit")
        self.size = size
        self.limit = limit


class FrameDecodeError(FrameError):
    """The body was read completely but is not a valid message: the stream is still usable."""

    recoverable = True


class ConnectionClosed(FrameError):
    """The peer closed the stream (cleanly between frames, or in the middle of one)."""


def encode_frame(message: Any) -> bytes:
    body = _encoder.encode(message)
    return HEADER.pack(len(body)) + body


def encode_frames(messages: list[Any]) -> bytes:
    """Several frames in one buffer, so a burst costs one write."""
    return b"".join(encode_frame(m) for m in messages)


class FrameParser:
    """Incremental parser for bytes that arrive split at arbitrary points (sync, no I/O)."""

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self._buffer = bytearray()
        self._max_frame = max_frame

    def feed(self, data: bytes) -> list[bytes]:
        """Every frame `data` completes. An oversized header raises, once the whole frames
        before it were returned (the next `feed`, even of b"", raises then).

        Parses at an offset and keeps only the unfinished tail: a burst of small frames costs
        one copy per body, not a shift of the whole buffer per frame.
        """
        buffer: bytes | bytearray = data
        if self._buffer:
            self._buffer += data
            buffer = self._buffer
        bodies: list[bytes] = []
        position, size_of_all = 0, len(buffer)
        while size_of_all - position >= HEADER.size:
            (size,) = HEADER.unpack_from(buffer, position)
            if size > self._max_frame:
                if bodies:
                    break
                raise FrameTooLarge(size, self._max_frame)
            end = position + HEADER.size + size
            if end > size_of_all:
                break
            bodies.append(bytes(buffer[position + HEADER.size : end]))
            position = end
        if buffer is self._buffer:
            del self._buffer[:position]
        elif position < size_of_all:
            self._buffer += buffer[position:]
        return bodies

    @property
    def pending(self) -> int:
        return len(self._buffer)


class FramedStream(Generic[In, Out]):
    """One connection: typed receive of `In` messages, send of `Out` messages.

    Frames sent in one event-loop iteration are joined into one transport write (a streamed
    answer produces bursts of small frames: one syscall each would dominate the relay's cost).
    `drain` is awaited only when the transport asks for it (high-water mark).
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        incoming: Any,
        max_frame: int = MAX_FRAME,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self._decoder: msgspec.msgpack.Decoder[In] = msgspec.msgpack.Decoder(incoming)
        self._parser = FrameParser(max_frame)
        self._bodies: collections.deque[bytes] = collections.deque()  # read, not yet received
        self._pending: list[bytes] = []

    async def recv(self) -> In:
        """The next message; FrameDecodeError for one that does not decode (still in sync)."""
        if not self._bodies:
            await self._read_more()
        return self._decode(self._bodies.popleft())

    async def recv_batch(self) -> list[In | FrameDecodeError]:
        """Every message that has arrived (at least one), an undecodable one as its error."""
        if not self._bodies:
            await self._read_more()
        bodies, self._bodies = self._bodies, collections.deque()
        batch: list[In | FrameDecodeError] = []
        for body in bodies:
            try:
                batch.append(self._decode(body))
            except FrameDecodeError as exc:
                batch.append(exc)
        return batch

    async def _read_more(self) -> None:
        """Read until at least one whole frame is there; ConnectionClosed at the end of input."""
        while not self._bodies:
            self._bodies.extend(self._parser.feed(b""))  # a frame held back before a bad one
            if self._bodies:
                return
            data = await self.reader.read(READ_SIZE)
            if not data:
                where = " mid-frame" if self._parser.pending else ""
                raise ConnectionClosed(f"peer closed the connection{where}")
            self._bodies.extend(self._parser.feed(data))

    def _decode(self, body: bytes) -> In:
        try:
            return self._decoder.decode(body)
        except msgspec.DecodeError as exc:  # ValidationError is a subclass
            raise FrameDecodeError(str(exc)) from exc

    def send_nowait(self, message: Out) -> None:
        if self.writer.is_closing():
            raise ConnectionClosed("connection is closing")
        if not self._pending:
            asyncio.get_running_loop().call_soon(self.flush)
        self._pending.append(encode_frame(message))

    def flush(self) -> None:
        """Hand every frame queued so far to the transport in one write."""
        if not self._pending:
            return
        data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        self._pending.clear()
        if not self.writer.is_closing():
            self.writer.write(data)

    async def send(self, message: Out) -> None:
        self.send_nowait(message)
        await self.drain()

    async def drain(self) -> None:
        self.flush()
        transport = self.writer.transport
        if transport.get_write_buffer_size() > transport.get_write_buffer_limits()[1]:
            try:
                await self.writer.drain()
            except (ConnectionError, RuntimeError) as exc:
                raise ConnectionClosed(str(exc)) from exc

    @property
    def closed(self) -> bool:
        return self.writer.is_closing()

    async def close(self) -> None:
        self.flush()
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


async def open_framed(
    path: str, incoming: Any, *, timeout: float = 5.0, max_frame: int = MAX_FRAME
) -> FramedStream[Any, Any]:
    """Connect to a Unix socket and wrap it; raises OSError / TimeoutError as they come."""
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_unix_connection(path, limit=max_frame + HEADER.size)
    return FramedStream(reader, writer, incoming, max_frame)


def prepare_socket_dir(directory: str) -> None:
    """Create the runtime directory with mode 0700 (or tighten it if it already exists)."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    os.chmod(directory, 0o700)


def bind_unix_socket(path: str, backlog: int = 100) -> socket.socket:
    """A fresh 0600 Unix socket listening at `path`, replacing a stale socket file but nothing else.

    The socket is bound under a temporary name and renamed into place once it listens, so the
    file appearing means "connect now" (a client that saw it never gets ECONNREFUSED).
    """
    with contextlib.suppress(FileNotFoundError):
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            raise FileExistsError(f"{path} exists and is not a socket")
    # Short (socket paths are limited to 107 bytes) and ours alone: one bind at a time per pid.
    staging = os.path.join(os.path.dirname(path), f".{os.getpid()}.sock.new")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(staging)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)  # no window in which the socket is readable by others
    try:
        sock.bind(staging)
        sock.listen(backlog)
        os.rename(staging, path)  # atomic, and replaces a stale socket file
    except OSError:
        sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(staging)
        raise
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    return sock


ConnectionHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def start_unix_server(
    path: str, handler: ConnectionHandler, *, max_frame: int = MAX_FRAME
) -> asyncio.Server:
    sock = bind_unix_socket(path)
    return await asyncio.start_unix_server(handler, sock=sock, limit=max_frame + HEADER.size)
