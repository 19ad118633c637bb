"""Many concurrent request ids multiplexed over one real Unix socket, with a Cancel mid-stream."""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import struct
from pathlib import Path

import pytest

from protocol.channel import MuxClient
from protocol.chat import Cancel, ChatRequest, Delta, Failure, Finish, Usage
from protocol.child_socket import Ping, Pong
from protocol.framing import (
    ConnectionClosed,
    FrameDecodeError,
    FramedStream,
    FrameTooLarge,
    open_framed,
    start_unix_server,
)
from protocol.vocabulary import ChildState, ErrorCode, LoginState
from protocol.worker_socket import WorkerReply, WorkerRequest

pytestmark = pytest.mark.component

CHUNKS = 20


class StreamingServer:
    """A protocol peer that streams CHUNKS deltas per chat, interleaving all open chats."""

    def __init__(self) -> None:
        self.cancelled: set[int] = set()
        self.bad_frames = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stream: FramedStream[object, object] = FramedStream(reader, writer, WorkerRequest)
        tasks: dict[int, asyncio.Task[None]] = {}
        try:
            while True:
                try:
                    request = await stream.recv()
                except FrameDecodeError:
                    self.bad_frames += 1
                    await stream.send(Failure(id=0, code=ErrorCode.BAD_FRAME, message="bad"))
                    continue
                match request:
                    case ChatRequest(id=rid):
                        tasks[rid] = asyncio.create_task(self._chat(stream, rid))
                    case Cancel(id=rid):
                        self.cancelled.add(rid)
                        if rid in tasks:
                            tasks.pop(rid).cancel()
                    case Ping(id=rid):
                        await stream.send(
                            Pong(
                                id=rid,
                                name="t",
                                state=ChildState.READY,
                                login=LoginState.LOGGED_IN,
                                pid=os.getpid(),
                            )
                        )
        except ConnectionClosed:
            pass
        finally:
            for task in tasks.values():
                task.cancel()
            await stream.close()

    async def _chat(self, stream: FramedStream[object, object], rid: int) -> None:
        for i in range(CHUNKS):
            await stream.send(Delta(id=rid, text=f"{rid}:{i};"))
            await asyncio.sleep(0)  # let other chats interleave
        await stream.send(Finish(id=rid, usage=Usage(completion_tokens=CHUNKS)))


@pytest.fixture
async def server(sock_dir: Path) -> object:
    peer = StreamingServer()
    path = str(sock_dir / "w.sock")
    srv = await start_unix_server(path, peer.handle)
    yield peer, path
    srv.close()
    await srv.wait_closed()


def chat(rid: int) -> ChatRequest:
    return ChatRequest(id=rid, request_id=f"r{rid}", model="auto", messages=[])


async def collect(client: MuxClient, rid: int) -> list[object]:
    return [event async for event in client.stream(chat(rid))]


async def test_socket_file_is_private(server: tuple[StreamingServer, str]) -> None:
    _, path = server
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


async def test_concurrent_streams_each_get_their_own_ordered_events(
    server: tuple[StreamingServer, str],
) -> None:
    _, path = server
    client = MuxClient(path)
    ids = [client.next_id() for _ in range(50)]
    results = await asyncio.gather(*(collect(client, rid) for rid in ids))
    for rid, events in zip(ids, results, strict=True):
        texts = [e.text for e in events if isinstance(e, Delta)]
        assert texts == [f"{rid}:{i};" for i in range(CHUNKS)]
        assert isinstance(events[-1], Finish)
        assert events[-1].id == rid
    assert client.pending == 0
    await client.close()


class BurstServer:
    """Answers every chat with CHUNKS deltas and its Finish, all in one write."""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stream: FramedStream[object, object] = FramedStream(reader, writer, WorkerRequest)
        try:
            while True:
                request = await stream.recv()
                if isinstance(request, ChatRequest):
                    rid = request.id
                    for i in range(CHUNKS):
                        stream.send_nowait(Delta(id=rid, text=f"{i};"))
                    await stream.send(Finish(id=rid))
        except ConnectionClosed:
            pass
        finally:
            await stream.close()


async def test_a_burst_of_events_is_one_batch_that_ends_with_the_finish(sock_dir: Path) -> None:
    path = str(sock_dir / "b.sock")
    srv = await start_unix_server(path, BurstServer().handle)
    client = MuxClient(path)
    try:
        batches = [batch async for batch in client.stream_batches(chat(client.next_id()))]
        events = [event for batch in batches for event in batch]
        assert [e.text for e in events[:-1] if isinstance(e, Delta)] == [
            f"{i};" for i in range(CHUNKS)
        ]
        assert isinstance(events[-1], Finish)
        assert len(batches) == 1  # one write, one read: the relay takes it in one step
    finally:
        await client.close()
        srv.close()
        await srv.wait_closed()


async def test_leaving_a_stream_early_sends_cancel(server: tuple[StreamingServer, str]) -> None:
    peer, path = server
    client = MuxClient(path)
    rid = client.next_id()
    other = asyncio.create_task(collect(client, client.next_id()))
    iterator = client.stream(chat(rid))
    first = await anext(iterator)
    assert isinstance(first, Delta)
    await iterator.aclose()
    async with asyncio.timeout(5):
        while rid not in peer.cancelled:
            await asyncio.sleep(0.005)
    # the neighbour on the same connection is unaffected
    events = await other
    assert isinstance(events[-1], Finish)
    ping = await client.call(lambda i: Ping(id=i), timeout=5)
    assert isinstance(ping, Pong)
    await client.close()


async def test_garbage_frame_gets_typed_error_and_connection_survives(
    server: tuple[StreamingServer, str],
) -> None:
    peer, path = server
    stream = await open_framed(path, WorkerReply)
    stream.writer.write(struct.pack(">I", 3) + b"\xc1\xc1\xc1")  # 0xc1 is never valid msgpack
    reply = await stream.recv()
    assert isinstance(reply, Failure)
    assert reply.code is ErrorCode.BAD_FRAME
    await stream.send(Ping(id=9))
    assert isinstance(await stream.recv(), Pong)
    assert peer.bad_frames == 1
    await stream.close()


async def test_dead_peer_wakes_every_waiter(sock_dir: Path) -> None:
    path = str(sock_dir / "d.sock")
    accepted: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)
        with contextlib.suppress(ConnectionError):
            await reader.read()

    srv = await start_unix_server(path, swallow)
    client = MuxClient(path)
    waiters = [asyncio.create_task(collect(client, client.next_id())) for _ in range(5)]
    async with asyncio.timeout(5):
        while not accepted or client.pending < 5:
            await asyncio.sleep(0.005)
    accepted[0].close()
    for waiter in waiters:
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(waiter, 5)
    srv.close()
    await srv.wait_closed()
    await client.close()


async def test_receiver_rejects_oversized_frame_without_reading_it(sock_dir: Path) -> None:
    path = str(sock_dir / "o.sock")
    errors: list[Exception] = []

    async def guarded(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stream: FramedStream[object, object] = FramedStream(
            reader, writer, WorkerRequest, max_frame=1024
        )
        try:
            await stream.recv()
        except FrameTooLarge as exc:
            errors.append(exc)
        await stream.close()

    srv = await start_unix_server(path, guarded)
    _, writer = await asyncio.open_unix_connection(path)
    writer.write(struct.pack(">I", 10**9))
    await writer.drain()
    async with asyncio.timeout(5):
        while not errors:
            await asyncio.sleep(0.005)
    assert isinstance(errors[0], FrameTooLarge)
    writer.close()
    srv.close()
    await srv.wait_closed()
