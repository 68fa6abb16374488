"""``GetBlocks``: several blocks in one exchange, their checks, replies bounded in bytes
(the rest asked again), and the fallback to one ``GetBlock`` per block for a peer that
does not know the message."""

from __future__ import annotations

import random
from typing import Any

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from trioblock._core.block import BlockHeader, DataBlock
from trioblock._core.hashing import Hash
from trioblock._net.channel import Channel
from trioblock._net.codec import decode_message, encode_message
from trioblock._net.handshake import server_handshake
from trioblock._net.messages import (
    MAX_GET_BLOCKS,
    MAX_GET_BLOCKS_BYTES,
    Error,
    GetBlocks,
    GetBlocksReply,
    GetResult,
    GotBlock,
    message_from_map,
    message_to_map,
)
from trioblock._net.rpc import RpcNode
from trioblock.errors import (
    CorruptBlockError,
    ProtocolError,
    RequestFailed,
    TransportError,
    TrioblockError,
)
from trioblock.testing import MemoryNetwork

from .conftest import SECRET, FakeHandler, block_of, open_rpc_nodes

H = Hash(bytes(range(32)))
hashes = st.binary(min_size=32, max_size=32).map(Hash)
headers = st.sampled_from([BlockHeader.PLAIN, BlockHeader.COMPRESSED])
results: st.SearchStrategy[GetResult] = (
    st.none()
    | st.builds(GotBlock, headers, st.integers(0, MAX_GET_BLOCKS_BYTES // MAX_GET_BLOCKS))
    | st.builds(Error, st.sampled_from(["corrupt", "internal"]), st.text(max_size=50))
)


class BatchGetHandler(FakeHandler):
    """A :class:`FakeHandler` that knows ``GetBlocks`` (stopping at the byte budget)."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []
        #: Returned instead of the real answer (a buggy handler).
        self.bad_answer: Any = None

    async def rpc_get_blocks(self, hashes: list[Hash]) -> list[DataBlock | BaseException | None]:
        self.batches.append(len(hashes))
        if self.bad_answer is not None:
            return self.bad_answer  # type: ignore[no-any-return]
        out: list[DataBlock | BaseException | None] = []
        size = 0
        for h in hashes:
            if size >= MAX_GET_BLOCKS_BYTES:
                break
            if self.fail_get is not None:
                out.append(self.fail_get)
                continue
            block = self.blocks.get(h)
            out.append(block)
            size += 0 if block is None else len(block.payload)
        return out


@given(st.lists(hashes, min_size=1, max_size=MAX_GET_BLOCKS))
def test_a_request_round_trips(asked: list[Hash]) -> None:
    message = GetBlocks(asked)
    assert message_from_map(message_to_map(message)) == message
    assert decode_message(encode_message(message)) == message


@given(st.lists(results, min_size=1, max_size=MAX_GET_BLOCKS))
def test_a_reply_round_trips(answers: list[GetResult]) -> None:
    message = GetBlocksReply(answers)
    assert decode_message(encode_message(message)) == message
    assert message.announces_body() == any(isinstance(r, GotBlock) for r in answers)


GOT = {"header": "compressed", "length": 10}


@pytest.mark.parametrize(
    "value",
    [
        pytest.param({"type": "GetBlocks"}, id="no-hashes"),
        pytest.param({"type": "GetBlocks", "hashes": []}, id="empty"),
        pytest.param({"type": "GetBlocks", "hashes": bytes(H)}, id="not-a-list"),
        pytest.param({"type": "GetBlocks", "hashes": [bytes(H)[:31]]}, id="hash-31"),
        pytest.param({"type": "GetBlocks", "hashes": [bytes(H).hex()]}, id="hash-text"),
        pytest.param(
            {"type": "GetBlocks", "hashes": [bytes(H)] * (MAX_GET_BLOCKS + 1)}, id="too-many"
        ),
        pytest.param({"type": "GetBlocksReply"}, id="no-results"),
        pytest.param({"type": "GetBlocksReply", "results": []}, id="no-result"),
        pytest.param({"type": "GetBlocksReply", "results": {}}, id="results-a-map"),
        pytest.param({"type": "GetBlocksReply", "results": [None]}, id="result-null"),
        pytest.param({"type": "GetBlocksReply", "results": [True]}, id="result-not-a-map"),
        pytest.param(
            {"type": "GetBlocksReply", "results": [{}] * (MAX_GET_BLOCKS + 1)}, id="too-many"
        ),
        pytest.param({"type": "GetBlocksReply", "results": [{"kind": ""}]}, id="empty-kind"),
        pytest.param({"type": "GetBlocksReply", "results": [{"kind": 3}]}, id="kind-int"),
        pytest.param({"type": "GetBlocksReply", "results": [{"kind": "missing"}]}, id="no-message"),
        pytest.param(
            {"type": "GetBlocksReply", "results": [{**GOT, "header": "zstd"}]}, id="header"
        ),
        pytest.param({"type": "GetBlocksReply", "results": [{"header": "plain"}]}, id="no-len"),
        pytest.param({"type": "GetBlocksReply", "results": [{**GOT, "length": -1}]}, id="negative"),
        pytest.param(
            {"type": "GetBlocksReply", "results": [{**GOT, "length": True}]}, id="length-bool"
        ),
        pytest.param(
            {"type": "GetBlocksReply", "results": [{**GOT, "length": 1 << 60}]}, id="huge"
        ),
        pytest.param({"type": "GetBlocksReply", "results": [{"other": 1}]}, id="unknown"),
        pytest.param(
            {
                "type": "GetBlocksReply",
                "results": [{**GOT, "length": MAX_GET_BLOCKS_BYTES}, GOT],
            },
            id="bodies-too-long",
        ),
    ],
)
def test_a_malformed_message_is_a_protocol_error(value: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError):
        message_from_map(value)


def test_a_reply_may_end_with_one_block_past_the_bound() -> None:
    big = {"header": "plain", "length": MAX_GET_BLOCKS_BYTES * 2}
    reply = message_from_map(
        {"type": "GetBlocksReply", "results": [{**GOT, "length": MAX_GET_BLOCKS_BYTES - 1}, big]}
    )
    assert isinstance(reply, GetBlocksReply)
    assert reply.lengths == [MAX_GET_BLOCKS_BYTES - 1, MAX_GET_BLOCKS_BYTES * 2]


def test_an_unsendable_request_is_a_value_error_here() -> None:
    from trioblock._net.messages import checked

    with pytest.raises(ValueError, match="GetBlocks"):
        checked(GetBlocks([]))
    with pytest.raises(ValueError, match="GetBlocks"):
        checked(GetBlocks([H] * (MAX_GET_BLOCKS + 1)))


def _nodes(handler: FakeHandler) -> Any:
    net = MemoryNetwork()
    return open_rpc_nodes(
        {"a": net.transport("a"), "b": net.transport("b")}, handlers={"b": handler}
    )


async def test_blocks_come_in_order_with_absent_ones_and_repeats() -> None:
    handler = BatchGetHandler()
    rng = random.Random(5)
    blocks = [block_of(rng.randbytes(n), compressed=n % 2 == 0) for n in (0, 1, 5000, 70_000)]
    handler.blocks.update(blocks)
    absent = block_of(b"nobody has this")[0]
    asked = [blocks[2][0], absent, blocks[0][0], blocks[2][0], blocks[3][0], blocks[1][0]]
    async with _nodes(handler) as nodes:
        got = await nodes["a"].get_blocks("b", asked)
        assert nodes["a"].gets.batches_sent == 1
    want = dict(blocks)
    assert got == [
        want[asked[0]],
        None,
        want[asked[2]],
        want[asked[3]],
        want[asked[4]],
        want[asked[5]],
    ]
    assert handler.batches == [6]


async def test_many_blocks_go_in_requests_of_at_most_64() -> None:
    handler = BatchGetHandler()
    blocks = [block_of(b"block %d" % i) for i in range(150)]
    handler.blocks.update(blocks)
    async with _nodes(handler) as nodes:
        got = await nodes["a"].get_blocks("b", [h for h, _ in blocks])
    assert got == [b for _, b in blocks]
    assert handler.batches == [64, 64, 22]


async def test_a_reply_stops_at_the_byte_bound_and_the_rest_is_asked_again() -> None:
    handler = BatchGetHandler()
    rng = random.Random(7)
    blocks = [block_of(rng.randbytes(1_500_000)) for _ in range(7)]
    handler.blocks.update(blocks)
    async with _nodes(handler) as nodes:
        got = await nodes["a"].get_blocks("b", [h for h, _ in blocks])
        sent = nodes["a"].gets.batches_sent
    assert got == [b for _, b in blocks]
    # 3 blocks reach 4 MiB (4.5 MB): 3 + 3 + 1.
    assert handler.batches == [7, 4, 1]
    assert sent == 3


async def test_each_block_has_its_own_error() -> None:
    handler = BatchGetHandler()
    h, block = block_of(b"x" * 100)
    handler.blocks[h] = block
    handler.fail_get = CorruptBlockError(h, "over its size limit")
    async with _nodes(handler) as nodes:
        got = await nodes["a"].get_blocks("b", [h, h])
    assert all(isinstance(g, CorruptBlockError) and g.hash == h for g in got)


async def test_a_handler_bug_is_an_internal_error_for_that_block_or_the_request() -> None:
    handler = BatchGetHandler()
    h1, b1 = block_of(b"one")
    h2, _ = block_of(b"two")
    handler.blocks[h1] = b1
    async with _nodes(handler) as nodes:
        handler.bad_answer = [b1, ValueError("bug")]
        got = await nodes["a"].get_blocks("b", [h1, h2])
        assert got[0] == b1 and isinstance(got[1], RequestFailed)
        handler.bad_answer = []  # no outcome at all
        with pytest.raises(RequestFailed, match="internal"):
            await nodes["a"].get_blocks("b", [h1])
        handler.bad_answer = [b1, b1, b1]  # more than asked
        with pytest.raises(RequestFailed, match="internal"):
            await nodes["a"].get_blocks("b", [h1, h2])
        handler.bad_answer = None
        assert await nodes["a"].get_blocks("b", [h1]) == [b1]  # the server carries on


async def test_a_peer_that_does_not_know_get_blocks_gets_one_get_per_block() -> None:
    handler = FakeHandler()  # no rpc_get_blocks: refuses the message as an older peer
    blocks = [block_of(b"from an old peer %d" % i) for i in range(5)]
    handler.blocks.update(blocks)
    absent = block_of(b"absent")[0]
    async with _nodes(handler) as nodes:
        asked = [h for h, _ in blocks] + [absent]
        assert await nodes["a"].get_blocks("b", asked) == [b for _, b in blocks] + [None]
        gets = sum(1 for n, _ in handler.calls if n == "get")
        assert gets == 6
        # Remembered: the next gets go one by one without trying the batch again.
        opened = nodes["a"].stats.connections_opened
        assert await nodes["a"].get_blocks("b", asked[:2]) == [b for _, b in blocks[:2]]
        assert nodes["a"].gets.batches_sent == 0
        assert nodes["a"].stats.connections_opened == opened


async def test_an_old_peer_failing_a_block_gives_that_block_its_error() -> None:
    handler = FakeHandler()
    h, block = block_of(b"corrupt there")
    handler.blocks[h] = block
    handler.fail_get = CorruptBlockError(h, "bad copy")
    async with _nodes(handler) as nodes:
        got = await nodes["a"].get_blocks("b", [h])
    assert isinstance(got[0], CorruptBlockError)


async def test_an_unreachable_peer_fails_the_whole_call() -> None:
    net = MemoryNetwork()
    async with open_rpc_nodes({"a": net.transport("a")}, timeout=2.0) as nodes:
        with pytest.raises(TransportError):
            await nodes["a"].get_blocks("b", [H])


Answer = tuple[GetBlocksReply | Error, bytes | None]


async def _ask_raw(answer: Any, asked: list[Hash]) -> tuple[Any, list[list[Hash]]]:
    """Ask a hand-written server that answers each ``GetBlocks`` with ``answer(request)``
    (a reply and its body, if any); return what ``get_blocks`` gave (or the exception it
    raised) and the hashes of each request the server received."""
    net = MemoryNetwork()
    requests: list[list[Hash]] = []

    async def handle(stream: trio.abc.Stream) -> None:
        channel = Channel(stream)
        await server_handshake(channel, node_id="b", secret=SECRET)
        request = await channel.receive_event()
        assert isinstance(request, GetBlocks)
        requests.append(request.hashes)
        reply, body = answer(request)
        if body is None:
            await channel.send_message(reply)
        else:
            await channel.send_with_body(reply, body)
        await channel.aclose()

    async with trio.open_nursery() as nursery:
        await nursery.start(net.transport("b").serve, handle)
        a = RpcNode("a", net.transport("a"), SECRET, timeout=5.0)
        try:
            return await a.get_blocks("b", asked), requests
        except TrioblockError as exc:
            return exc, requests
        finally:
            await a.aclose()
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("results", "body", "match"),
    [
        pytest.param([GotBlock(BlockHeader.PLAIN, 10)], b"x" * 9, "9 bytes", id="short-body"),
        pytest.param([GotBlock(BlockHeader.PLAIN, 10)], b"x" * 11, "11 bytes", id="long-body"),
        pytest.param([None, None, None], None, "3 results", id="more-results-than-asked"),
    ],
)
async def test_a_reply_off_the_request_is_a_protocol_error(
    results: list[GetResult], body: bytes | None, match: str
) -> None:
    got, _ = await _ask_raw(lambda _r: (GetBlocksReply(results), body), [H, H])
    assert isinstance(got, ProtocolError)
    assert match in str(got)


async def test_a_reply_to_the_first_hashes_only_is_followed_by_a_request_for_the_rest() -> None:
    blocks = dict([block_of(b"first"), block_of(b"second"), block_of(b"third")])
    asked = list(blocks)

    def first_only(request: GetBlocks) -> Answer:
        block = blocks[request.hashes[0]]
        return GetBlocksReply([GotBlock(block.header, len(block.payload))]), block.payload

    got, requests = await _ask_raw(first_only, asked)
    assert got == [blocks[h] for h in asked]
    assert requests == [asked, asked[1:], asked[2:]]


async def test_an_error_reply_fails_the_whole_request() -> None:
    got, _ = await _ask_raw(lambda _r: (Error("busy", "too many requests"), None), [H])
    assert isinstance(got, RequestFailed)
    assert "too many requests" in str(got)
