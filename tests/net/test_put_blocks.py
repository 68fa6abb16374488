"""``PutBlocks``: several blocks in one exchange, their checks, the coalescing of puts
bound to one peer, and the fallback to one ``PutBlock`` per block for a peer that does
not know the message."""

from __future__ import annotations

import gc
import random
from collections.abc import AsyncIterable
from typing import Any

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from trioblock._core.block import BlockHeader, DataBlock, decode_block
from trioblock._core.hashing import Hash
from trioblock._net.codec import decode_message, encode_message
from trioblock._net.messages import (
    MAX_PUT_BLOCKS,
    MAX_PUT_BLOCKS_BYTES,
    Error,
    PutBlocks,
    PutBlocksReply,
    PutEntry,
    message_from_map,
    message_to_map,
)
from trioblock._net.pool import Connection
from trioblock.errors import CorruptBlockError, ProtocolError, TrioblockError
from trioblock.testing import MemoryNetwork

from .conftest import FakeHandler, block_of, open_rpc_nodes

H = Hash(bytes(range(32)))
hashes = st.binary(min_size=32, max_size=32).map(Hash)
headers = st.sampled_from([BlockHeader.PLAIN, BlockHeader.COMPRESSED])
entries = st.builds(PutEntry, hashes, headers, st.integers(0, MAX_PUT_BLOCKS_BYTES // 16))
errors = st.none() | st.builds(Error, st.sampled_from(["corrupt", "internal"]), st.text())


class BatchHandler(FakeHandler):
    """A :class:`FakeHandler` that knows ``PutBlocks`` (verifying each block)."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    async def rpc_put_blocks(
        self, blocks: list[PutEntry], body: AsyncIterable[tuple[int, bytes]]
    ) -> list[BaseException | None]:
        self.batches.append(len(blocks))
        pieces: list[list[bytes]] = [[] for _ in blocks]
        async for index, chunk in body:
            pieces[index].append(chunk)
        outcomes: list[BaseException | None] = []
        for entry, piece in zip(blocks, pieces, strict=True):
            block = DataBlock(entry.header, b"".join(piece))
            try:
                decode_block(entry.hash, block)
            except CorruptBlockError as exc:
                outcomes.append(exc)
                continue
            self.blocks[entry.hash] = block
            outcomes.append(None)
        return outcomes


@given(st.lists(entries, min_size=1, max_size=MAX_PUT_BLOCKS))
def test_a_request_round_trips(blocks: list[PutEntry]) -> None:
    message = PutBlocks(blocks)
    assert message_from_map(message_to_map(message)) == message
    assert decode_message(encode_message(message)) == message


@given(st.lists(errors, min_size=1, max_size=MAX_PUT_BLOCKS))
def test_a_reply_round_trips(results: list[Error | None]) -> None:
    message = PutBlocksReply(results)
    assert decode_message(encode_message(message)) == message


ENTRY = {"hash": bytes(H), "header": "plain", "length": 10}


@pytest.mark.parametrize(
    "value",
    [
        pytest.param({"type": "PutBlocks"}, id="no-blocks"),
        pytest.param({"type": "PutBlocks", "blocks": []}, id="empty"),
        pytest.param({"type": "PutBlocks", "blocks": ENTRY}, id="not-a-list"),
        pytest.param({"type": "PutBlocks", "blocks": [bytes(H)]}, id="entry-not-a-map"),
        pytest.param(
            {"type": "PutBlocks", "blocks": [ENTRY] * (MAX_PUT_BLOCKS + 1)}, id="too-many"
        ),
        pytest.param(
            {"type": "PutBlocks", "blocks": [{**ENTRY, "hash": bytes(H)[:31]}]}, id="hash-31"
        ),
        pytest.param({"type": "PutBlocks", "blocks": [{**ENTRY, "header": "zstd"}]}, id="header"),
        pytest.param({"type": "PutBlocks", "blocks": [{**ENTRY, "length": -1}]}, id="negative"),
        pytest.param({"type": "PutBlocks", "blocks": [{**ENTRY, "length": "10"}]}, id="text"),
        pytest.param(
            {"type": "PutBlocks", "blocks": [{**ENTRY, "length": MAX_PUT_BLOCKS_BYTES + 1}]},
            id="block-too-long",
        ),
        pytest.param(
            {
                "type": "PutBlocks",
                "blocks": [{**ENTRY, "length": MAX_PUT_BLOCKS_BYTES // 2 + 1}] * 2,
            },
            id="bodies-too-long",
        ),
        pytest.param({"type": "PutBlocksReply"}, id="no-results"),
        pytest.param({"type": "PutBlocksReply", "results": []}, id="no-result"),
        pytest.param({"type": "PutBlocksReply", "results": [True]}, id="result-not-a-map"),
        pytest.param({"type": "PutBlocksReply", "results": [{"kind": ""}]}, id="empty-kind"),
        pytest.param(
            {"type": "PutBlocksReply", "results": [{}] * (MAX_PUT_BLOCKS + 1)}, id="too-many"
        ),
    ],
)
def test_a_malformed_message_is_a_protocol_error(value: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError):
        message_from_map(value)


async def put_all(client: Any, peer: str, blocks: list[tuple[Hash, DataBlock]]) -> list[object]:
    """Every put at once: None for each acknowledged, else its exception."""
    results: list[object] = [None] * len(blocks)

    async def one(i: int, h: Hash, block: DataBlock) -> None:
        try:
            await client.put_block(peer, h, block)
        except TrioblockError as exc:
            results[i] = exc

    async with trio.open_nursery() as nursery:
        for i, (h, block) in enumerate(blocks):
            nursery.start_soon(one, i, h, block)
    return results


async def test_puts_waiting_together_go_in_one_request_with_their_own_outcomes() -> None:
    handler = BatchHandler()
    net = MemoryNetwork()
    transports = {"a": net.transport("a"), "b": net.transport("b")}
    blocks = [block_of(b"block %d " % i * 100, compressed=i % 2 == 0) for i in range(20)]
    bad = 7
    blocks[bad] = (blocks[bad][0], block_of(b"other bytes")[1])  # a wrong hash
    async with open_rpc_nodes(transports, handlers={"b": handler}) as nodes:
        results = await put_all(nodes["a"], "b", blocks)
    assert isinstance(results[bad], CorruptBlockError)
    assert [r for i, r in enumerate(results) if i != bad] == [None] * 19
    assert sorted(handler.blocks) == sorted(h for i, (h, _) in enumerate(blocks) if i != bad)
    assert handler.batches and max(handler.batches) <= MAX_PUT_BLOCKS
    assert sum(handler.batches) + sum(1 for n, _ in handler.calls if n == "put") == 20
    assert nodes["a"].puts.batches_sent == len(handler.batches)


async def test_a_peer_that_does_not_know_put_blocks_gets_one_put_per_block() -> None:
    handler = FakeHandler()  # no rpc_put_blocks: refuses the message as an older peer
    net = MemoryNetwork()
    transports = {"a": net.transport("a"), "b": net.transport("b")}
    blocks = [block_of(b"to an old peer %d " % i * 50) for i in range(12)]
    async with open_rpc_nodes(transports, handlers={"b": handler}) as nodes:
        assert await put_all(nodes["a"], "b", blocks) == [None] * 12
        assert sorted(handler.blocks) == sorted(h for h, _ in blocks)
        # Remembered: the next puts go one by one without trying the batch again.
        more = [block_of(b"later %d " % i * 50) for i in range(6)]
        opened = nodes["a"].stats.connections_opened
        assert await put_all(nodes["a"], "b", more) == [None] * 6
        assert nodes["a"].puts.batches_sent == 0
        assert nodes["a"].stats.connections_opened - opened <= 6


async def test_blocks_spanning_body_chunks_are_cut_at_their_lengths() -> None:
    handler = BatchHandler()
    net = MemoryNetwork()
    transports = {"a": net.transport("a"), "b": net.transport("b")}
    rng = random.Random(3)
    sizes = [0, 1, 70_000, 3, 200_000, 65_536, 150_001, 9]
    blocks = [block_of(rng.randbytes(n)) for n in sizes]
    async with open_rpc_nodes(transports, handlers={"b": handler}) as nodes:
        assert await put_all(nodes["a"], "b", blocks) == [None] * len(blocks)
    assert {h: b for h, b in blocks} == handler.blocks
    assert sum(handler.batches) >= len(blocks) - 1  # all but the first went together


@pytest.mark.parametrize("extra", [5, -5], ids=["shorter", "longer"])
async def test_a_body_of_another_length_than_announced_is_a_protocol_error(
    extra: int,
) -> None:
    handler = BatchHandler()
    net = MemoryNetwork()
    transports = {"a": net.transport("a"), "b": net.transport("b")}
    (h1, b1), (h2, b2) = block_of(b"first " * 50), block_of(b"second " * 50)
    request = PutBlocks(
        [
            PutEntry(h1, b1.header, len(b1.payload)),
            PutEntry(h2, b2.header, len(b2.payload) + extra),
        ]
    )

    async def op(conn: Connection) -> object:
        await conn.channel.send_with_body(request, b1.payload + b2.payload)
        return await conn.receive()

    async with open_rpc_nodes(transports, handlers={"b": handler}) as nodes:
        try:
            reply = await nodes["a"].pool.call("b", False, 5.0, op)
        except TrioblockError as exc:  # the connection closed before the reply was read
            reply = exc
        assert isinstance(reply, Error | TrioblockError)
        if isinstance(reply, Error):
            assert reply.kind == "protocol"
        assert h2 not in handler.blocks
        # The server carries on.
        h3, b3 = block_of(b"after")
        await nodes["a"].put_block("b", h3, b3)
        assert h3 in handler.blocks


async def test_a_handler_that_stops_reading_a_batch_early_leaves_nothing_unclosed() -> None:
    # A node's handler may stop reading the blocks of a PutBlocks half-way (its byte
    # budget refused, the node stopping): the parts' iterator must not be left for the
    # garbage collector to close (pytest turns that warning into a failure).
    class Quitter(BatchHandler):
        async def rpc_put_blocks(
            self, blocks: list[PutEntry], body: AsyncIterable[tuple[int, bytes]]
        ) -> list[BaseException | None]:
            async for _index, _chunk in body:
                break
            return [TrioblockError("refused") for _ in blocks]

    net = MemoryNetwork()
    transports = {"a": net.transport("a"), "b": net.transport("b")}
    blocks = [block_of(b"quit after the first %d " % i * 500) for i in range(6)]
    async with open_rpc_nodes(transports, handlers={"b": Quitter()}) as nodes:
        results = await put_all(nodes["a"], "b", blocks)
        gc.collect()
        await trio.lowlevel.checkpoint()
    assert nodes["a"].puts.batches_sent >= 1
    assert any(isinstance(r, TrioblockError) for r in results)  # the batched ones
