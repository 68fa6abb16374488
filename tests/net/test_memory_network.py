"""``MemoryNetwork``: stream semantics and every fault control."""

from __future__ import annotations

import itertools

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from trioblock._net.codec import FrameCodec
from trioblock._net.messages import PutBlock
from trioblock.errors import CorruptBlockError, TransportError
from trioblock.testing._memory import MemoryNetwork, MemoryStream

from .conftest import FakeHandler, block_of, open_rpc_nodes


async def _pair(net: MemoryNetwork) -> tuple[trio.abc.Stream, trio.abc.Stream]:
    accepted: list[trio.abc.Stream] = []
    got = trio.Event()

    async def handler(stream: trio.abc.Stream) -> None:
        accepted.append(stream)
        got.set()
        await trio.sleep_forever()

    # A private serving nursery per pair; the streams outlive serve only in this helper.
    net._listen("srv", _NURSERY[0], handler)
    client = await net.transport("cli").connect("srv")
    await got.wait()
    del net._listeners["srv"]
    return client, accepted[0]


_NURSERY: list[trio.Nursery] = []


async def test_memory_streams_pass_trio_stream_checks() -> None:
    async with trio.open_nursery() as nursery:
        _NURSERY[:] = [nursery]

        async def maker() -> tuple[trio.abc.Stream, trio.abc.Stream]:
            return await _pair(MemoryNetwork(buffer_size=64))

        async def clogged_maker() -> tuple[trio.abc.Stream, trio.abc.Stream]:
            a, b = await maker()
            await a.send_all(b"x" * 64)  # both buffers full: the next send_all blocks
            await b.send_all(b"x" * 64)
            return a, b

        await trio.testing.check_two_way_stream(maker, clogged_maker)
        nursery.cancel_scope.cancel()


async def _echo(stream: trio.abc.Stream) -> None:
    async with stream:
        while data := await stream.receive_some():
            await stream.send_all(data)


async def test_partition_refuses_and_breaks_connections_until_healed() -> None:
    net = MemoryNetwork()
    async with trio.open_nursery() as nursery:
        await nursery.start(net.transport("b").serve, _echo)
        existing = await net.transport("a").connect("b")
        net.partition(["a"], ["b", "c"])
        with pytest.raises(trio.BrokenResourceError):
            await existing.send_all(b"x")
        with pytest.raises(TransportError, match="partition"):
            await net.transport("a").connect("b")
        net.heal()
        stream = await net.transport("a").connect("b")
        await stream.send_all(b"ok")
        assert await stream.receive_some() == b"ok"
        await stream.aclose()
        await existing.aclose()
        nursery.cancel_scope.cancel()
    assert net.stats.connections_refused == 1


async def test_delay_applies_to_every_send_under_mock_clock(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = MemoryNetwork()
    net.set_delay("a", 2.5)
    async with trio.open_nursery() as nursery:
        await nursery.start(net.transport("b").serve, _echo)
        start = trio.current_time()
        stream = await net.transport("a").connect("b")  # connect is delayed too
        await stream.send_all(b"1")
        await stream.send_all(b"2")
        assert trio.current_time() - start == pytest.approx(7.5)
        assert await stream.receive_some() in (b"1", b"12")
        await stream.aclose()
        nursery.cancel_scope.cancel()


async def test_drops_are_reproducible_with_the_seeded_random() -> None:
    async def run(seed: int) -> list[bool]:
        net = MemoryNetwork(seed=seed)
        net.set_drop("a", 0.5)
        outcomes = []
        async with trio.open_nursery() as nursery:
            await nursery.start(net.transport("b").serve, _echo)
            for _ in range(20):
                try:
                    stream = await net.transport("a").connect("b")
                except TransportError:
                    outcomes.append(False)
                else:
                    outcomes.append(True)
                    await stream.aclose()
            nursery.cancel_scope.cancel()
        return outcomes

    first = await run(7)
    assert first == await run(7)
    assert True in first and False in first


async def test_a_dropped_send_breaks_the_connection() -> None:
    net = MemoryNetwork()
    async with trio.open_nursery() as nursery:
        await nursery.start(net.transport("b").serve, _echo)
        stream = await net.transport("a").connect("b")
        net.set_drop("a", 1.0)
        with pytest.raises(trio.BrokenResourceError):
            await stream.send_all(b"lost")
        with pytest.raises(trio.BrokenResourceError):
            await stream.receive_some()
        await stream.aclose()
        nursery.cancel_scope.cancel()
    assert net.stats.drops == 1


async def test_corrupt_next_flips_one_byte_in_body_chunks_only() -> None:
    net = MemoryNetwork()
    received: list[bytes] = []

    async def collect(stream: trio.abc.Stream) -> None:
        async with stream:
            while data := await stream.receive_some():
                received.append(bytes(data))

    codec = FrameCodec()
    message = codec.send_message(PutBlock(block_of(b"x")[0], block_of(b"x")[1].header))
    chunk = codec.send_body_chunk(b"\x00" * 100)
    end = codec.send_body_end()
    async with trio.open_nursery() as nursery:
        await nursery.start(net.transport("b").serve, collect)
        net.corrupt_next("a", 1)
        stream = await net.transport("a").connect("b")
        for frame in (message, chunk, end, message, chunk, end):
            await stream.send_all(frame)
        await stream.aclose()
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    wire = b"".join(received)
    expected = (message + chunk + end) * 2
    assert len(wire) == len(expected)
    diff = [i for i in range(len(wire)) if wire[i] != expected[i]]
    assert len(diff) == 1
    assert len(message) + 5 <= diff[0] < len(message) + len(chunk)
    assert net.stats.corrupted_chunks == 1


async def test_corrupted_put_is_caught_by_a_verifying_receiver() -> None:
    net = MemoryNetwork()
    handlers = {"b": FakeHandler()}
    transports = {n: net.transport(n) for n in ("a", "b")}
    async with open_rpc_nodes(transports, handlers=handlers) as nodes:
        h, block = block_of(b"precious data" * 1000)
        net.corrupt_next("a")
        with pytest.raises(CorruptBlockError):
            await nodes["a"].put_block("b", h, block)
        assert h not in handlers["b"].blocks
        await nodes["a"].put_block("b", h, block)  # the next one goes through intact
        assert handlers["b"].blocks[h] == block


async def test_corrupted_get_reaches_the_client_unverified() -> None:
    net = MemoryNetwork()
    handlers = {"b": FakeHandler()}
    transports = {n: net.transport(n) for n in ("a", "b")}
    async with open_rpc_nodes(transports, handlers=handlers) as nodes:
        h, block = block_of(b"z" * 5000)
        handlers["b"].blocks[h] = block
        net.corrupt_next("b")
        got = await nodes["a"].get_block("b", h)
        assert got.payload != block.payload
        assert len(got.payload) == len(block.payload)


async def test_crash_and_stopped_serve_make_a_node_unreachable() -> None:
    net = MemoryNetwork()
    async with trio.open_nursery() as nursery:
        scope = trio.CancelScope()

        async def serve(*, task_status: trio.TaskStatus[None]) -> None:
            with scope:
                await net.transport("b").serve(_echo, task_status=task_status)

        await nursery.start(serve)
        stream = await net.transport("a").connect("b")
        net.crash("b")
        with pytest.raises(trio.BrokenResourceError):
            await stream.receive_some()
        await stream.aclose()
        with pytest.raises(TransportError, match="refused"):
            await net.transport("a").connect("b")
        with pytest.raises(TransportError, match="crashed"):
            await net.transport("b").connect("a")
        scope.cancel()
        await trio.testing.wait_all_tasks_blocked()
        await nursery.start(net.transport("b").serve, _echo)  # a restart
        stream = await net.transport("a").connect("b")
        await stream.aclose()
        nursery.cancel_scope.cancel()
    with pytest.raises(TransportError, match="not serving"):
        await net.transport("a").connect("b")


async def test_stats_count_connections_and_bytes() -> None:
    net = MemoryNetwork()
    async with trio.open_nursery() as nursery:
        await nursery.start(net.transport("b").serve, _echo)
        stream = await net.transport("a").connect("b")
        await stream.send_all(b"12345")
        assert await stream.receive_some() == b"12345"
        await stream.aclose()
        nursery.cancel_scope.cancel()
    assert net.stats.connections_opened == 1
    assert net.stats.connections_by_node["a"] == 1
    assert net.stats.bytes_sent["a"] == 5
    assert net.stats.bytes_sent["b"] == 5


def test_fault_controls_validate_their_arguments() -> None:
    net = MemoryNetwork()
    with pytest.raises(ValueError):
        net.set_drop("a", 1.5)
    with pytest.raises(ValueError):
        net.set_delay("a", -1)
    with pytest.raises(ValueError):
        net.corrupt_next("a", -1)
    assert isinstance(net.transport("a"), type(net.transport("b")))
    assert net.transport("a") is net.transport("a")
    assert MemoryStream is not None


def _conversation(bodies: list[bytes]) -> tuple[bytes, list[tuple[int, int]]]:
    """A frame stream (a message and a body per entry) and the payload span of each chunk."""
    codec = FrameCodec()
    wire = b""
    spans: list[tuple[int, int]] = []
    h, block = block_of(b"x")
    for body in bodies:
        wire += codec.send_message(PutBlock(h, block.header))
        for start in range(0, len(body), 300):
            chunk = body[start : start + 300]
            spans.append((len(wire) + 5, len(wire) + 5 + len(chunk)))
            wire += codec.send_body_chunk(chunk)
        wire += codec.send_body_end()
    return wire, spans


async def _send_in_pieces(net: MemoryNetwork, pieces: list[bytes]) -> bytes:
    received = bytearray()

    async def collect(stream: trio.abc.Stream) -> None:
        async with stream:
            while data := await stream.receive_some():
                received.extend(data)

    async with trio.open_nursery() as nursery:
        await nursery.start(net.transport("b").serve, collect)
        stream = await net.transport("a").connect("b")
        for piece in pieces:
            await stream.send_all(piece)
        await stream.aclose()
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    return bytes(received)


@settings(max_examples=150, deadline=None)
@given(
    bodies=st.lists(st.binary(max_size=700), min_size=1, max_size=4),
    cuts=st.lists(st.integers(min_value=0), max_size=12),
    n=st.integers(min_value=0, max_value=4),
    seed=st.integers(min_value=0, max_value=100),
)
def test_corrupt_next_is_independent_of_how_frames_are_grouped_into_writes(
    bodies: list[bytes], cuts: list[int], n: int, seed: int
) -> None:
    """Whatever the writes (one frame each, several, a frame split): the next n chunks."""
    wire, spans = _conversation(bodies)
    points = sorted({c % (len(wire) + 1) for c in cuts} | {0, len(wire)})
    pieces = [wire[a:b] for a, b in itertools.pairwise(points) if b > a]
    net = MemoryNetwork(seed=seed)
    net.corrupt_next("a", n)
    got = trio.run(_send_in_pieces, net, pieces)
    assert len(got) == len(wire)
    diff = [i for i in range(len(wire)) if got[i] != wire[i]]
    expected_chunks = spans[:n]
    assert len(diff) == len(expected_chunks) == net.stats.corrupted_chunks
    for index, (start, end) in zip(diff, expected_chunks, strict=True):
        assert start <= index < end


async def test_a_put_sent_in_one_write_is_still_corrupted() -> None:
    """A small block goes out as one write (message, chunk, end): corruption still hits."""
    net = MemoryNetwork()
    wire, spans = _conversation([b"\x00" * 200])
    net.corrupt_next("a")
    got = await _send_in_pieces(net, [wire])
    diff = [i for i in range(len(wire)) if got[i] != wire[i]]
    assert len(diff) == 1 and spans[0][0] <= diff[0] < spans[0][1]
