"""``NeedBlocksQuery``: asking a peer about many blocks at once, its checks, and the
fallback to one ``NeedBlockQuery`` per block for a peer that does not know it."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from trioblock._core.hashing import Hash
from trioblock._net import server as server_module
from trioblock._net.codec import decode_message, encode_message
from trioblock._net.messages import (
    MAX_NEED_BLOCKS,
    NeedBlocksQuery,
    NeedBlocksReply,
    message_from_map,
    message_to_map,
)
from trioblock.errors import ProtocolError
from trioblock.testing import MemoryNetwork

from .conftest import FakeHandler, block_of, open_rpc_nodes

H = Hash(bytes(range(32)))
hashes = st.binary(min_size=32, max_size=32).map(Hash)


@given(st.lists(hashes, min_size=1, max_size=MAX_NEED_BLOCKS))
def test_a_query_round_trips(batch: list[Hash]) -> None:
    message = NeedBlocksQuery(batch)
    assert message_from_map(message_to_map(message)) == message
    assert decode_message(encode_message(message)) == message  # through CBOR too


@given(st.lists(st.booleans(), max_size=MAX_NEED_BLOCKS))
def test_a_reply_round_trips(needed: list[bool]) -> None:
    message = NeedBlocksReply(needed)
    assert message_from_map(message_to_map(message)) == message


@pytest.mark.parametrize(
    "value",
    [
        pytest.param({"type": "NeedBlocksQuery"}, id="no-hashes"),
        pytest.param({"type": "NeedBlocksQuery", "hashes": []}, id="empty"),
        pytest.param({"type": "NeedBlocksQuery", "hashes": bytes(H)}, id="not-a-list"),
        pytest.param({"type": "NeedBlocksQuery", "hashes": [bytes(H)[:31]]}, id="hash-31"),
        pytest.param({"type": "NeedBlocksQuery", "hashes": [bytes(H) + b"x"]}, id="hash-33"),
        pytest.param({"type": "NeedBlocksQuery", "hashes": ["a" * 32]}, id="hash-text"),
        pytest.param({"type": "NeedBlocksQuery", "hashes": [bytes(H), 7]}, id="hash-int"),
        pytest.param(
            {"type": "NeedBlocksQuery", "hashes": [bytes(H)] * (MAX_NEED_BLOCKS + 1)},
            id="too-many",
        ),
        pytest.param({"type": "NeedBlocksReply"}, id="no-needed"),
        pytest.param({"type": "NeedBlocksReply", "needed": True}, id="needed-not-a-list"),
        pytest.param({"type": "NeedBlocksReply", "needed": [True, 1]}, id="needed-int"),
        pytest.param({"type": "NeedBlocksReply", "needed": [None]}, id="needed-null"),
        pytest.param(
            {"type": "NeedBlocksReply", "needed": [False] * (MAX_NEED_BLOCKS + 1)},
            id="too-many-answers",
        ),
    ],
)
def test_malformed_batches_are_protocol_errors(value: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError):
        message_from_map(value)


def test_an_oversized_query_is_refused_before_it_is_sent() -> None:
    from trioblock._net.messages import checked

    with pytest.raises(ValueError, match="NeedBlocksQuery"):
        checked(NeedBlocksQuery([H] * (MAX_NEED_BLOCKS + 1)))


async def test_a_peer_answers_a_batch_in_order_and_long_lists_are_split() -> None:
    handler = FakeHandler()
    net = MemoryNetwork()
    transports = {"a": net.transport("a"), "b": net.transport("b")}
    async with open_rpc_nodes(transports, handlers={"b": handler}) as nodes:
        a = nodes["a"]
        stored, block = block_of(b"held by b")
        await a.put_block("b", stored, block)
        asked = [block_of(b"block %d" % i)[0] for i in range(MAX_NEED_BLOCKS + 10)]
        asked[3] = stored
        answers = await a.need_blocks("b", asked, background=True)
        assert answers == [h != stored for h in asked]
        # FakeHandler has no rpc_need_blocks: the server asked it block by block.
        assert sum(1 for name, _ in handler.calls if name == "need") == len(asked)


class BatchHandler(FakeHandler):
    """A handler with the batch method (as a node has): counts batch calls."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    async def rpc_need_blocks(self, hashes: list[Hash]) -> list[bool]:
        self.batches.append(len(hashes))
        return [h not in self.blocks for h in hashes]


async def test_a_batch_is_one_request_to_a_handler_that_has_the_batch_method() -> None:
    handler = BatchHandler()
    net = MemoryNetwork()
    transports = {"a": net.transport("a"), "b": net.transport("b")}
    async with open_rpc_nodes(transports, handlers={"b": handler}) as nodes:
        asked = [block_of(b"block %d" % i)[0] for i in range(64)]
        assert await nodes["a"].need_blocks("b", asked) == [True] * 64
        assert handler.batches == [64]
        assert not any(name == "need" for name, _ in handler.calls)


async def test_a_peer_that_does_not_know_the_batch_message_is_asked_block_by_block(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An older peer answers an unknown request with a ``protocol`` error and closes the
    connection: the client falls back to ``NeedBlockQuery`` per block, and remembers."""
    monkeypatch.delitem(server_module.SIMPLE_ROUTES, NeedBlocksQuery)
    handler = FakeHandler()
    net = MemoryNetwork()
    transports = {"a": net.transport("a"), "b": net.transport("b")}
    async with open_rpc_nodes(transports, handlers={"b": handler}) as nodes:
        a = nodes["a"]
        stored, block = block_of(b"held by b")
        await a.put_block("b", stored, block)
        asked = [block_of(b"block %d" % i)[0] for i in range(5)] + [stored]
        assert await a.need_blocks("b", asked) == [True] * 5 + [False]
        assert await a.need_blocks("b", asked, background=True) == [True] * 5 + [False]
        assert sum(1 for name, _ in handler.calls if name == "need") == 2 * len(asked)
        # The second call did not try the batch form again (no second protocol error).
        assert a.stats.connections_opened <= 4
        # Other requests still work.
        assert await a.need_block("b", stored) is False


async def test_a_reply_of_the_wrong_length_is_a_protocol_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Liar(FakeHandler):
        async def rpc_need_blocks(self, hashes: list[Hash]) -> list[bool]:
            return [True]

    async def short_reply(handler: Any, peer: str, request: NeedBlocksQuery) -> Any:
        return NeedBlocksReply([True])

    monkeypatch.setitem(server_module.SIMPLE_ROUTES, NeedBlocksQuery, short_reply)
    net = MemoryNetwork()
    transports = {"a": net.transport("a"), "b": net.transport("b")}
    async with open_rpc_nodes(transports, handlers={"b": Liar()}) as nodes:
        with pytest.raises(ProtocolError, match="2 blocks with 1 answers"):
            await nodes["a"].need_blocks("b", [H, block_of(b"x")[0]])


async def test_a_handler_answering_the_wrong_count_is_an_internal_error_not_a_crash() -> None:
    class Buggy(FakeHandler):
        async def rpc_need_blocks(self, hashes: list[Hash]) -> list[bool]:
            return [True] * (len(hashes) + 1)

    net = MemoryNetwork()
    transports = {"a": net.transport("a"), "b": net.transport("b")}
    async with open_rpc_nodes(transports, handlers={"b": Buggy()}) as nodes:
        from trioblock._net.errormap import RequestFailed

        with pytest.raises(RequestFailed, match="internal"):
            await nodes["a"].need_blocks("b", [H])
        with trio.fail_after(5):
            assert await nodes["a"].need_block("b", H) is True  # the server carries on
