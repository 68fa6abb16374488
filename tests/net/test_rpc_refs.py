"""Cluster-reference requests between an ``RpcNode`` client and a server with a fake handler."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import cbor2
import pytest
import trio

from trioblock._net.channel import Channel
from trioblock._net.handshake import client_handshake, server_handshake
from trioblock._net.messages import (
    Error,
    Message,
    RefDigests,
    RefDigestsReply,
    RefEntries,
    RefFetch,
)
from trioblock._net.rpc import RequestFailed, RpcNode
from trioblock.errors import MissingBlockError, ProtocolError, TrioblockError
from trioblock.testing import MemoryNetwork, open_cluster

from .conftest import SECRET, FakeHandler, open_rpc_nodes

H1 = bytes([1]) + bytes(31)
H2 = bytes([2]) + bytes(31)


@asynccontextmanager
async def pair(**kwargs: Any) -> AsyncIterator[tuple[MemoryNetwork, RpcNode, FakeHandler]]:
    net = MemoryNetwork()
    handler = FakeHandler()
    transports = {"a": net.transport("a"), "b": net.transport("b")}
    async with open_rpc_nodes(transports, handlers={"b": handler}, **kwargs) as nodes:
        yield net, nodes["a"], handler


async def test_update_digests_fetch_and_collect_round_trip() -> None:
    async with pair() as (net, a, handler):
        entries = [(H1, b"v1", False, 10), (H2, b"v2", True, 20), (H1, b"v3", False, 30)]
        await a.ref_update("b", entries, background=True)
        assert handler.calls[-1] == ("ref_update", ("a", entries))  # peer = the proven id
        digests = await a.ref_digests("b", [b"", b"\x01", b"\x03"], background=False)
        assert [count for count, _ in digests] == [3, 2, 0]
        assert all(len(digest) == 32 for _, digest in digests)
        page, more = await a.ref_fetch("b", b"\x01", b"", 1, background=True)
        assert page == [(H1, b"v1", False, 10)] and more is True
        page, more = await a.ref_fetch("b", b"\x01", H1 + b"v1", 10, background=True)
        assert page == [(H1, b"v3", False, 30)] and more is False
        await a.ref_collect("b", [(H2, b"v2", True, 20)], background=False)
        assert set(handler.refs) == {(H1, b"v1"), (H1, b"v3")}
        assert net.stats.connections_opened == 2  # one per pool, reused throughout


async def test_the_largest_update_travels_on_an_authenticated_connection() -> None:
    async with pair() as (_, a, handler):
        entries = [
            (bytes([i % 256, i // 256]) + bytes(30), b"o" * 128, True, 2**63 - 1)
            for i in range(4096)
        ]
        await a.ref_update("b", entries, background=False)
        assert len(handler.refs) == 4096
        page, more = await a.ref_fetch("b", b"", b"", 4096, background=False)
        assert len(page) == 4096 and more is False


async def test_handler_errors_come_back_with_their_kind() -> None:
    async with pair() as (_, a, handler):
        handler.fail_refs = TrioblockError("not now")
        with pytest.raises(RequestFailed) as info:
            await a.ref_update("b", [(H1, b"o", False, 1)], background=False)
        assert info.value.kind == "refused" and "not now" in info.value.remote_message
        handler.fail_refs = MissingBlockError(H1)  # no hash in the request: no block error
        with pytest.raises(RequestFailed) as info:
            await a.ref_digests("b", [b""], background=False)
        assert info.value.kind == "missing"
        handler.fail_refs = None
        await a.ref_collect("b", [(H1, b"o", True, 1)], background=False)


@pytest.mark.parametrize(
    "bad_answer",
    [
        [(0, bytes(32))] * 2,  # two digests for one prefix
        [(0, b"short")],
        [(-1, bytes(32))],
        "nonsense",
    ],
)
async def test_a_handler_returning_bad_digests_is_an_internal_error(
    bad_answer: Any, caplog: pytest.LogCaptureFixture
) -> None:
    async with pair() as (net, a, handler):
        handler.bad_ref_answer = bad_answer
        with pytest.raises(RequestFailed, match="internal"):
            await a.ref_digests("b", [b""], background=False)
        assert "handler ref_digests failed" in caplog.text
        handler.bad_ref_answer = None
        assert len(await a.ref_digests("b", [b""], background=False)) == 1
        assert net.stats.connections_opened == 1  # the connection survived


async def test_a_handler_returning_too_many_entries_is_an_internal_error() -> None:
    async with pair() as (_, a, handler):
        handler.bad_ref_answer = ([(H1, b"o", False, 1)] * 3, False)
        with pytest.raises(RequestFailed, match="internal"):
            await a.ref_fetch("b", b"", b"", 2, background=False)


@pytest.mark.parametrize(
    "call",
    [
        lambda a: a.ref_update("b", [], background=False),
        lambda a: a.ref_update("b", [(32, b"o", False, 1)], background=False),
        lambda a: a.ref_update("b", [(H1, b"o" * 129, False, 1)], background=False),
        lambda a: a.ref_collect("b", [(H1, b"o", False, -1)], background=False),
        lambda a: a.ref_digests("b", [b"12345"], background=False),
        lambda a: a.ref_digests("b", [b""] * 257, background=False),
        lambda a: a.ref_fetch("b", b"", b"", 0, background=False),
        lambda a: a.ref_fetch("b", b"", b"x" * 161, 5, background=False),
    ],
)
async def test_bad_arguments_are_value_errors_before_anything_is_sent(
    call: Callable[[RpcNode], Awaitable[Any]],
) -> None:
    async with pair() as (net, a, handler):
        with pytest.raises(ValueError):
            await call(a)
        assert net.stats.connections_opened == 0
        assert handler.calls == []


async def test_a_malformed_ref_request_closes_only_that_connection() -> None:
    async with pair() as (net, a, handler):
        channel = Channel(await net.transport("a").connect("b"), peer="b")
        await client_handshake(channel, node_id="a", expected_peer="b", secret=SECRET)
        # RefFetch with a 5-byte prefix.
        payload = cbor2.dumps({"type": "RefFetch", "prefix": b"12345", "after": b"", "limit": 1})
        await channel.stream.send_all(len(payload).to_bytes(4, "big") + b"\x01" + payload)
        event = await channel.receive_event()
        assert isinstance(event, Error) and event.kind == "protocol"
        await channel.aclose()
        assert handler.calls == []
        assert await a.ref_digests("b", [b""], background=False) == [(0, handler_digest([]))]


def handler_digest(entries: list[Any]) -> bytes:
    from trioblock._core.hashing import blake2sum

    return blake2sum(repr(entries).encode())


async def serve_raw(
    net: MemoryNetwork, answer: Callable[[Message], Message]
) -> Callable[[trio.Nursery], Awaitable[None]]:
    """Serve "b" with a hand-written server answering each request with ``answer``."""

    async def handle(stream: trio.abc.Stream) -> None:
        channel = Channel(stream)
        await server_handshake(channel, node_id="b", secret=SECRET)
        request = await channel.receive_event()
        assert isinstance(request, RefDigests | RefFetch)
        await channel.send_message(answer(request))
        await channel.aclose()

    async def start(nursery: trio.Nursery) -> None:
        await nursery.start(net.transport("b").serve, handle)

    return start


@pytest.mark.parametrize(
    ("call", "answer", "match"),
    [
        (
            lambda a: a.ref_digests("b", [b"", b"\x01"], background=False),
            lambda r: RefDigestsReply([(0, bytes(32))]),
            "answered 2 prefixes with 1 digests",
        ),
        (
            lambda a: a.ref_fetch("b", b"\x01", b"", 1, background=False),
            lambda r: RefEntries([(H1, b"o", False, 1)] * 2, False),
            "2 entries, 1 asked",
        ),
        (
            lambda a: a.ref_fetch("b", b"\x01", b"", 5, background=False),
            lambda r: RefEntries([(H2, b"o", False, 1)], False),
            "outside prefix 01",
        ),
        (
            lambda a: a.ref_digests("b", [b""], background=False),
            lambda r: RefEntries([], False),
            "answered RefDigests with RefEntries",
        ),
    ],
)
async def test_a_peer_answering_off_the_request_is_a_protocol_error(
    call: Callable[[RpcNode], Awaitable[Any]],
    answer: Callable[[Message], Message],
    match: str,
) -> None:
    net = MemoryNetwork()
    start = await serve_raw(net, answer)
    async with trio.open_nursery() as nursery:
        await start(nursery)
        a = RpcNode("a", net.transport("a"), SECRET)
        with pytest.raises(ProtocolError, match=match):
            await call(a)
        await a.aclose()
        nursery.cancel_scope.cancel()


async def test_a_node_answers_reference_requests(tmp_path: Any) -> None:
    async with open_cluster(tmp_path, n=1, replication_factor=1) as cluster:
        client = RpcNode("x", cluster.net.transport("x"), cluster.rpc_secret)
        await client.ref_update("n0", [(H1, b"o", False, 1)], background=False)
        assert cluster.nodes["n0"].get_block_rc(H1) == 1
        ((count, digest),) = await client.ref_digests("n0", [b""], background=False)
        assert count == 1 and len(digest) == 32
        entries, more = await client.ref_fetch("n0", b"", b"", 10, background=False)
        assert (entries, more) == ([(H1, b"o", False, 1)], False)
        await client.ref_update("n0", [(H1, b"o", True, 2)], background=False)
        assert cluster.nodes["n0"].get_block_rc(H1) == 0
        await client.ref_collect("n0", [(H1, b"o", True, 2)], background=False)
        assert cluster.nodes["n0"].references(H1) == []
        await client.aclose()
