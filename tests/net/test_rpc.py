"""``RpcNode`` over ``MemoryNetwork``: requests, error mapping, pooling, timeouts, robustness."""

from __future__ import annotations

import logging
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

from trioblock._core.block import BlockHeader
from trioblock._net.channel import Channel
from trioblock._net.codec import FrameKind
from trioblock._net.handshake import client_handshake
from trioblock._net.messages import Error, NeedBlockQuery, Ok
from trioblock._net.rpc import RpcNode
from trioblock.errors import (
    CorruptBlockError,
    MissingBlockError,
    ProtocolError,
    TransportError,
)
from trioblock.testing._memory import MemoryNetwork

from .conftest import SECRET, FakeHandler, block_of, open_rpc_nodes


@asynccontextmanager
async def pair(
    net: MemoryNetwork | None = None, **kwargs: Any
) -> AsyncIterator[tuple[MemoryNetwork, RpcNode, FakeHandler]]:
    """Node "a" (client) and node "b" (serving a FakeHandler)."""
    net = net or MemoryNetwork()
    handler = FakeHandler()
    transports = {"a": net.transport("a"), "b": net.transport("b")}
    async with open_rpc_nodes(transports, handlers={"b": handler}, **kwargs) as nodes:
        yield net, nodes["a"], handler


@pytest.mark.parametrize("compressed", [False, True])
async def test_put_then_get_returns_the_same_encoded_block(compressed: bool) -> None:
    async with pair() as (_, a, handler):
        data = bytes(range(256)) * 12_000  # 3 MiB: several body chunks
        h, block = block_of(data, compressed=compressed)
        await a.put_block("b", h, block)
        assert handler.blocks[h] == block
        got = await a.get_block("b", h, order_tag=42)
        assert got == block
        assert handler.calls[-1] == ("get", (h, 42))


async def test_empty_block_round_trips() -> None:
    async with pair() as (_, a, _handler):
        h, block = block_of(b"")
        await a.put_block("b", h, block)
        assert await a.get_block("b", h) == block


async def test_stream_block_yields_header_and_chunks() -> None:
    async with pair() as (net, a, handler):
        h, block = block_of(b"s" * (2 * 1024 * 1024 + 5))
        handler.blocks[h] = block
        async with a.stream_block("b", h) as (header, chunks):
            assert header is BlockHeader.PLAIN
            parts = [chunk async for chunk in chunks]
        assert b"".join(parts) == block.payload
        assert max(len(p) for p in parts) <= 1024 * 1024
        # The fully read stream returned its connection to the pool.
        await a.need_block("b", h)
        assert net.stats.connections_opened == 1


async def test_stream_block_left_early_closes_the_connection() -> None:
    async with pair() as (net, a, handler):
        h, block = block_of(b"s" * (3 * 1024 * 1024))
        handler.blocks[h] = block
        async with a.stream_block("b", h) as (_, chunks):
            async for _chunk in chunks:
                break
        assert a.idle_connections("b") == 0
        await a.need_block("b", h)
        assert net.stats.connections_opened == 2


async def test_missing_block_maps_to_missing_block_error() -> None:
    async with pair() as (_, a, _handler):
        h, _ = block_of(b"nowhere")
        with pytest.raises(MissingBlockError) as info:
            await a.get_block("b", h)
        assert info.value.hash == h
        with pytest.raises(MissingBlockError):
            async with a.stream_block("b", h):
                pass


async def test_remote_errors_map_back_to_exceptions() -> None:
    async with pair() as (_, a, handler):
        h, _block = block_of(b"x")
        handler.fail_get = CorruptBlockError(h)
        with pytest.raises(CorruptBlockError) as info:
            await a.get_block("b", h)
        assert info.value.hash == h
        handler.fail_get = ProtocolError("nope")
        with pytest.raises(ProtocolError):
            await a.get_block("b", h)
        handler.fail_get = TransportError("cannot reach the others")
        with pytest.raises(TransportError, match="refused"):
            await a.get_block("b", h)


async def test_put_of_bytes_not_matching_the_hash_is_refused() -> None:
    async with pair() as (_, a, handler):
        h, _ = block_of(b"the real content")
        _, other = block_of(b"something else")
        with pytest.raises(CorruptBlockError):
            await a.put_block("b", h, other)
        assert handler.blocks == {}
        await a.put_block("b", *block_of(b"fine"))  # the server carries on


async def test_need_block_and_admin() -> None:
    async with pair() as (_, a, _handler):
        h, block = block_of(b"needed?")
        assert await a.need_block("b", h) is True
        await a.put_block("b", h, block)
        assert await a.need_block("b", h, background=True) is False
        reply = await a.admin("b", {"op": "status", "args": [1, "two", b"3", None]})
        assert reply == {"echo": {"op": "status", "args": [1, "two", b"3", None]}, "blocks": 1}


async def test_corrupt_report_reaches_the_handler_with_the_authenticated_peer() -> None:
    async with pair() as (_, a, handler):
        h, _block = block_of(b"served bad")
        await a.report_corrupt("b", h)
        assert handler.calls[-1] == ("corrupt", ("a", h))


async def test_handler_bug_becomes_internal_error_and_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with pair() as (net, a, _handler):
        with pytest.raises(TransportError, match="internal"):
            await a.admin("b", {"op": "crash"})
        assert "handler admin failed" in caplog.text
        # The connection was clean: it is reused for the next request.
        assert (await a.admin("b", {"op": "ok"}))["echo"] == {"op": "ok"}
        assert net.stats.connections_opened == 1


async def test_repeated_requests_reuse_one_pooled_connection() -> None:
    async with pair() as (net, a, _handler):
        h, block = block_of(b"pooled")
        await a.put_block("b", h, block)
        for _ in range(10):
            await a.get_block("b", h)
            await a.need_block("b", h)
        with pytest.raises(MissingBlockError):  # an Error reply keeps the connection too
            await a.get_block("b", block_of(b"absent")[0])
        assert net.stats.connections_opened == 1
        assert a.stats.connections_opened == 1
        # Background traffic has its own pool.
        await a.need_block("b", h, background=True)
        await a.need_block("b", h, background=True)
        assert net.stats.connections_opened == 2


async def test_background_connections_are_capped_without_starving_foreground() -> None:
    async with pair(background_connections_per_peer=2) as (net, a, handler):
        h, _block = block_of(b"bg")
        handler.gate = trio.Event()
        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(lambda: a.need_block("b", h, background=True))
            await trio.testing.wait_all_tasks_blocked()
            assert handler.active == 2  # only two background requests reach the peer
            # A foreground request is not queued behind them.
            fg_done = trio.Event()

            async def foreground() -> None:
                await a.need_block("b", h)
                fg_done.set()

            nursery.start_soon(foreground)
            await trio.testing.wait_all_tasks_blocked()
            assert handler.active == 3
            handler.gate.set()
            await fg_done.wait()
        assert handler.max_active <= 3
        assert net.stats.connections_opened == 3


async def test_request_deadline_raises_transport_error_and_drops_the_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with pair(timeout=10.0) as (net, a, handler):
        h, _ = block_of(b"slow")
        handler.gate = trio.Event()
        start = trio.current_time()
        with pytest.raises(TransportError, match="timed out"):
            await a.need_block("b", h)
        assert trio.current_time() - start == pytest.approx(10.0)
        with pytest.raises(TransportError, match="timed out after 2"):
            await a.need_block("b", h, timeout=2.0)
        assert a.idle_connections() == 0
        handler.gate.set()
        assert await a.need_block("b", h) is True
        assert net.stats.connections_opened == 3


async def test_delay_slows_requests_under_mock_clock(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with pair(timeout=10.0) as (net, a, _handler):
        h, _ = block_of(b"far away")
        await a.need_block("b", h)  # connection pooled
        net.set_delay("b", 1.5)
        start = trio.current_time()
        await a.need_block("b", h)
        assert trio.current_time() - start == pytest.approx(1.5)
        net.set_delay("b", 20)
        with pytest.raises(TransportError, match="timed out"):
            await a.need_block("b", h)
        net.heal()
        assert await a.need_block("b", h) is True


async def test_partition_fails_requests_until_healed() -> None:
    async with pair() as (net, a, _handler):
        h, block = block_of(b"split")
        await a.put_block("b", h, block)
        net.partition(["a"], ["b"])
        with pytest.raises(TransportError):
            await a.get_block("b", h)
        net.heal()
        assert await a.get_block("b", h) == block


async def test_dead_pooled_connection_is_replaced_transparently() -> None:
    net = MemoryNetwork()
    handler = FakeHandler()
    b = RpcNode("b", net.transport("b"), SECRET)
    a = RpcNode("a", net.transport("a"), SECRET)
    h, block = block_of(b"restart")
    async with trio.open_nursery() as nursery:
        first = trio.CancelScope()

        async def serve_b(*, task_status: trio.TaskStatus[None]) -> None:
            with first:
                await b.serve(handler, task_status=task_status)

        await nursery.start(serve_b)
        await a.put_block("b", h, block)
        assert a.idle_connections("b") == 1
        first.cancel()
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(TransportError):
            await a.get_block("b", h)  # b is down
        await nursery.start(b.serve, handler)  # b restarts
        await a.put_block("b", h, block)
        await a.aclose()
        with pytest.raises(TransportError, match="closed"):
            await a.need_block("b", h)
        nursery.cancel_scope.cancel()


async def test_restart_after_pooling_retries_on_a_fresh_connection() -> None:
    net = MemoryNetwork()
    handler = FakeHandler()
    b = RpcNode("b", net.transport("b"), SECRET)
    a = RpcNode("a", net.transport("a"), SECRET)
    h, block = block_of(b"restart")
    async with trio.open_nursery() as nursery:
        scope = trio.CancelScope()

        async def serve_b(*, task_status: trio.TaskStatus[None]) -> None:
            with scope:
                await b.serve(handler, task_status=task_status)

        await nursery.start(serve_b)
        await a.put_block("b", h, block)
        assert a.idle_connections("b") == 1
        scope.cancel()  # b stops: the pooled connection is closed while idle
        await trio.testing.wait_all_tasks_blocked()
        await nursery.start(b.serve, handler)
        assert await a.get_block("b", h) == block  # no error: retried on a fresh connection
        assert a.stats.connections_opened == 2
        await a.aclose()
        nursery.cancel_scope.cancel()


async def test_handler_rejecting_early_gets_its_reply_through_and_closes_connection() -> None:
    async with pair() as (net, a, handler):
        h, block = block_of(b"r" * (5 * 1024 * 1024))
        handler.reject_put = CorruptBlockError(h, "refused before reading")
        with pytest.raises(CorruptBlockError):
            await a.put_block("b", h, block)
        assert a.idle_connections() == 0
        handler.reject_put = None
        await a.put_block("b", h, block)
        assert net.stats.connections_opened == 2


async def test_body_over_max_body_size_is_a_protocol_error() -> None:
    async with pair(max_body_size=1024 * 1024) as (_, a, handler):
        h, block = block_of(b"m" * (2 * 1024 * 1024))
        with pytest.raises(ProtocolError, match="body exceeds"):
            await a.put_block("b", h, block)
        assert handler.blocks == {}
        await a.put_block("b", *block_of(b"small"))


async def raw_client(net: MemoryNetwork) -> Channel:
    """An authenticated connection from "a" to "b", driven by hand."""
    channel = Channel(await net.transport("a").connect("b"), peer="b")
    await client_handshake(channel, node_id="a", expected_peer="b", secret=SECRET)
    return channel


async def test_protocol_violation_closes_only_that_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with pair() as (net, a, _handler):
        bad = await raw_client(net)
        await bad.stream.send_all(struct.pack(">IB", 3, FrameKind.MESSAGE) + b"\xff\xff\xff")
        event = await bad.receive_event()
        assert isinstance(event, Error) and event.kind == "protocol"  # told why, then dropped
        assert await bad.stream.receive_some() == b""
        await bad.aclose()
        assert "protocol error from a" in caplog.text
        assert any(r.levelno == logging.WARNING for r in caplog.records)
        # Other connections are unaffected.
        assert await a.need_block("b", block_of(b"x")[0]) is True


async def test_non_request_message_is_a_protocol_violation() -> None:
    async with pair() as (net, _a, _handler):
        bad = await raw_client(net)
        await bad.send_message(Ok())
        event = await bad.receive_event()
        assert isinstance(event, Error) and event.kind == "protocol"
        await bad.aclose()
        good = await raw_client(net)
        await good.send_message(NeedBlockQuery(block_of(b"y")[0]))
        assert (await good.receive_event()).__class__.__name__ == "NeedBlockReply"
        await good.aclose()


async def test_many_concurrent_requests_each_get_their_own_answer() -> None:
    async with pair() as (_, a, _handler):
        blocks = [block_of(f"block {i}".encode() * 100) for i in range(20)]
        async with trio.open_nursery() as nursery:
            for h, block in blocks:
                nursery.start_soon(a.put_block, "b", h, block)
        results: dict[bytes, bytes] = {}

        async def fetch(h: bytes) -> None:
            results[h] = (await a.get_block("b", h)).payload  # type: ignore[arg-type]

        async with trio.open_nursery() as nursery:
            for h, _ in blocks:
                nursery.start_soon(fetch, h)
        assert results == {h: block.payload for h, block in blocks}


def test_rpc_node_refuses_an_empty_secret() -> None:
    with pytest.raises(ValueError):
        RpcNode("a", MemoryNetwork().transport("a"), b"")


async def test_foreground_connections_to_a_slow_peer_are_capped() -> None:
    """A peer that answers slowly does not gather one connection per request: the
    requests past the cap wait for a connection and then reuse it (regression: a
    lagging node was opened 1,047 connections for 6,008 requests)."""
    async with pair(connections_per_peer=4) as (net, a, handler):
        h, _block = block_of(b"slow peer")
        handler.gate = trio.Event()
        async with trio.open_nursery() as nursery:
            for _ in range(20):
                nursery.start_soon(lambda: a.need_block("b", h))
            await trio.testing.wait_all_tasks_blocked()
            assert handler.active == 4
            handler.gate.set()
        assert handler.max_active == 4
        assert net.stats.connections_opened == 4
