"""Large frames: assembled from the received pieces, sent without copying the body."""

from __future__ import annotations

import random

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from trioblock._core.block import BlockHeader
from trioblock._core.hashing import Hash
from trioblock._net.channel import Channel
from trioblock._net.codec import (
    ASSEMBLE_MIN,
    MAX_CHUNK_SIZE,
    BodyChunk,
    BodyEnd,
    ConnectionClosed,
    Event,
    FrameCodec,
    NeedData,
)
from trioblock._net.messages import NeedBlockQuery, PutBlock
from trioblock.errors import ProtocolError, TransportError

from .test_codec import feed_all, split

H = Hash(bytes(range(32)))

#: Chunk sizes around the assembly threshold and the chunk limit.
sizes = st.sampled_from(
    [0, 1, 4096, ASSEMBLE_MIN - 1, ASSEMBLE_MIN, ASSEMBLE_MIN + 1, 300_000, MAX_CHUNK_SIZE]
)


def pattern(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


@settings(max_examples=60, deadline=None)
@given(
    chunk_sizes=st.lists(sizes, min_size=1, max_size=3),
    cuts=st.lists(st.integers(min_value=0), max_size=12),
    seed=st.integers(0, 1000),
)
def test_large_chunks_round_trip_through_arbitrary_splits(
    chunk_sizes: list[int], cuts: list[int], seed: int
) -> None:
    sender = FrameCodec()
    chunks = [pattern(size, seed + i) for i, size in enumerate(chunk_sizes)]
    wire = sender.send_message(PutBlock(H, BlockHeader.PLAIN))
    for chunk in chunks:
        header, data = sender.body_chunk_parts(chunk)
        wire += header + data
    wire += sender.send_body_end() + sender.send_message(NeedBlockQuery(H))
    events = feed_all(FrameCodec(), split(wire, cuts))
    assert events == [
        PutBlock(H, BlockHeader.PLAIN),
        *(BodyChunk(chunk) for chunk in chunks),
        BodyEnd(),
        NeedBlockQuery(H),
        ConnectionClosed(),
    ]


def _sending() -> FrameCodec:
    """A codec that has announced a body (so it may send chunks)."""
    codec = FrameCodec()
    codec.send_message(PutBlock(H, BlockHeader.PLAIN))
    return codec


def test_body_chunk_parts_does_not_copy_the_data() -> None:
    data = pattern(ASSEMBLE_MIN * 2, 1)
    header, same = _sending().body_chunk_parts(data)
    assert same is data
    assert header + data == _sending().send_body_chunk(data)


def test_a_large_frame_is_not_changed_by_later_changes_to_a_fed_bytearray() -> None:
    sender = _sending()
    data = pattern(ASSEMBLE_MIN * 3, 2)
    receiver = FrameCodec()
    receiver.receive_data(FrameCodec().send_message(PutBlock(H, BlockHeader.PLAIN)))
    assert isinstance(receiver.next_event(), PutBlock)
    wire = sender.send_body_chunk(data)
    pieces = [bytearray(wire[i : i + 50_000]) for i in range(0, len(wire), 50_000)]
    for piece in pieces:
        receiver.receive_data(piece)
        piece[:] = bytes(len(piece))  # the caller reuses its buffer
    assert receiver.next_event() == BodyChunk(data)


def test_end_of_input_inside_an_assembled_frame_is_a_truncation() -> None:
    receiver = FrameCodec()
    receiver.receive_data(FrameCodec().send_message(PutBlock(H, BlockHeader.PLAIN)))
    assert isinstance(receiver.next_event(), PutBlock)
    wire = _sending().send_body_chunk(pattern(ASSEMBLE_MIN * 2, 3))
    receiver.receive_data(wire[:1000])
    assert isinstance(receiver.next_event(), NeedData)
    receiver.receive_data(wire[1000:-1])
    assert isinstance(receiver.next_event(), NeedData)
    receiver.receive_data(b"")
    with pytest.raises(ProtocolError):
        receiver.next_event()
    assert receiver.truncated


def test_an_oversized_chunk_is_refused_before_it_is_assembled() -> None:
    receiver = FrameCodec(max_chunk_size=ASSEMBLE_MIN)
    receiver.receive_data(FrameCodec().send_message(PutBlock(H, BlockHeader.PLAIN)))
    assert isinstance(receiver.next_event(), PutBlock)
    receiver.receive_data(_sending().send_body_chunk(pattern(ASSEMBLE_MIN + 1, 4))[:100])
    with pytest.raises(ProtocolError):
        receiver.next_event()


async def _exchange(client: trio.abc.Stream, server: trio.abc.Stream, body: bytes) -> list[Event]:
    sender, receiver = Channel(client), Channel(server)
    events: list[Event] = []

    async def receive() -> None:
        while True:
            event = await receiver.receive_event()
            events.append(event)
            if isinstance(event, NeedBlockQuery):
                return

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receive)
        await sender.send_with_body(PutBlock(H, BlockHeader.PLAIN), body)
        await sender.send_message(NeedBlockQuery(H))
    return events


def _expected(body: bytes) -> list[Event]:
    chunks = [body[i : i + MAX_CHUNK_SIZE] for i in range(0, len(body), MAX_CHUNK_SIZE)]
    return [
        PutBlock(H, BlockHeader.PLAIN),
        *(BodyChunk(c) for c in chunks),
        BodyEnd(),
        NeedBlockQuery(H),
    ]


@pytest.mark.parametrize("size", [0, 4096, ASSEMBLE_MIN + 7, 3 * MAX_CHUNK_SIZE + 5])
async def test_bodies_cross_a_tcp_connection_intact(size: int) -> None:
    body = pattern(size, size)
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    try:
        client = await trio.open_tcp_stream("127.0.0.1", port)
        server = await listeners[0].accept()
        # A small send buffer makes the vectored write partial many times (tiny buffers
        # on both sides would stall on delayed acknowledgements instead).
        client.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_SNDBUF, 16384)
        async with client, server:
            assert await _exchange(client, server, body) == _expected(body)
    finally:
        for listener in listeners:
            await listener.aclose()


@pytest.mark.parametrize("size", [0, 4096, ASSEMBLE_MIN + 7, 3 * MAX_CHUNK_SIZE + 5])
async def test_bodies_cross_a_memory_stream_intact(size: int) -> None:
    body = pattern(size, size + 1)
    client, server = trio.testing.memory_stream_pair()
    assert await _exchange(client, server, body) == _expected(body)


async def test_a_peer_vanishing_mid_body_is_a_transport_error() -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    try:
        client = await trio.open_tcp_stream("127.0.0.1", port)
        server = await listeners[0].accept()
        client.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_SNDBUF, 4096)
        await server.aclose()
        with pytest.raises(TransportError):
            with trio.fail_after(10):
                await Channel(client).send_with_body(
                    PutBlock(H, BlockHeader.PLAIN), pattern(4 * MAX_CHUNK_SIZE, 5)
                )
        await client.aclose()
    finally:
        for listener in listeners:
            await listener.aclose()
