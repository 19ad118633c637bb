"""Framing: arbitrary split points, oversized and garbage frames, never a crash."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import struct
from typing import Any, cast

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.chat import Cancel, Delta
from protocol.framing import (
    ConnectionClosed,
    FrameDecodeError,
    FramedStream,
    FrameParser,
    FrameTooLarge,
    encode_frame,
    encode_frames,
)
from protocol.worker_socket import WorkerReply, WorkerRequest

pytestmark = pytest.mark.unit

texts = st.text(max_size=200)
deltas = st.builds(Delta, id=st.integers(0, 2**31), text=texts)


@given(
    messages=st.lists(deltas, min_size=1, max_size=20),
    cuts=st.lists(st.integers(0, 10_000), max_size=30),
)
@settings(max_examples=200, deadline=None)
def test_any_split_points_yield_the_same_messages(messages: list[Delta], cuts: list[int]) -> None:
    data = encode_frames(messages)
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    parser = FrameParser()
    bodies: list[bytes] = []
    for start, end in itertools.pairwise(points):
        bodies.extend(parser.feed(data[start:end]))
    decoder = msgspec.msgpack.Decoder(WorkerReply)
    assert [decoder.decode(b) for b in bodies] == messages
    assert parser.pending == 0


def test_length_prefix_is_big_endian_body_length() -> None:
    frame = encode_frame(Cancel(id=7))
    (size,) = struct.unpack(">I", frame[:4])
    assert size == len(frame) - 4
    assert msgspec.msgpack.decode(frame[4:], type=Cancel) == Cancel(id=7)


def test_oversized_header_is_rejected_before_the_body_arrives() -> None:
    parser = FrameParser(max_frame=1024)
    with pytest.raises(FrameTooLarge) as info:
        parser.feed(struct.pack(">I", 1025))  # no body bytes at all
    assert info.value.size == 1025


def test_incomplete_frame_waits_for_more_bytes() -> None:
    frame = encode_frame(Delta(id=1, text="x" * 50))
    parser = FrameParser()
    assert parser.feed(frame[:-1]) == []
    assert parser.pending == len(frame) - 1
    assert len(parser.feed(frame[-1:])) == 1


@given(garbage=st.binary(max_size=300))
@settings(max_examples=200, deadline=None)
def test_garbage_bodies_raise_decode_errors_only(garbage: bytes) -> None:
    decoder = msgspec.msgpack.Decoder(WorkerRequest)
    with contextlib.suppress(msgspec.DecodeError):
        decoder.decode(garbage)


def test_whole_frames_before_an_oversized_header_come_first() -> None:
    parser = FrameParser(max_frame=1024)
    good = encode_frame(Cancel(id=1))
    assert len(parser.feed(good + struct.pack(">I", 1025) + b"xx")) == 1
    with pytest.raises(FrameTooLarge):
        parser.feed(b"")


def framed_reader(data: bytes, *, eof: bool) -> FramedStream[Any, Any]:
    """A stream over bytes already received (no socket): the reader is fed by hand."""
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    if eof:
        reader.feed_eof()
    return FramedStream(reader, cast(Any, None), WorkerRequest)


async def test_a_burst_is_received_at_once_and_a_bad_frame_is_its_own_error() -> None:
    garbage = struct.pack(">I", 3) + b"\xc1\xc1\xc1"
    burst = encode_frame(Cancel(id=1)) + garbage + encode_frame(Cancel(id=2))
    stream = framed_reader(burst, eof=True)
    first, bad, last = await stream.recv_batch()
    assert (first, last) == (Cancel(id=1), Cancel(id=2))
    assert isinstance(bad, FrameDecodeError)
    with pytest.raises(ConnectionClosed):
        await stream.recv_batch()


async def test_recv_takes_one_message_of_a_burst_at_a_time() -> None:
    stream = framed_reader(encode_frames([Cancel(id=1), Cancel(id=2)]) + b"\0\0", eof=True)
    assert await stream.recv() == Cancel(id=1)
    assert await stream.recv() == Cancel(id=2)
    with pytest.raises(ConnectionClosed, match="mid-frame"):
        await stream.recv()
