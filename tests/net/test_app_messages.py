"""The messages of an application's bulk calls: ``RefUpdate`` with ``report`` and its
reply, ``BlocksHeldQuery`` and ``OwnedQuery``, on the wire and between two RPC nodes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from trioblock._core.hashing import Hash
from trioblock._net.messages import (
    BlocksHeldQuery,
    BlocksHeldReply,
    Message,
    OwnedQuery,
    OwnedReply,
    RefUpdate,
    RefUpdateReply,
    message_from_map,
    message_to_map,
)
from trioblock._net.rpc import RpcNode
from trioblock.errors import ProtocolError
from trioblock.testing import MemoryNetwork

from .conftest import FakeHandler, open_rpc_nodes

H1 = Hash(bytes([1]) + bytes(31))
H2 = Hash(bytes([2]) + bytes(31))


@pytest.mark.parametrize(
    "message",
    [
        RefUpdate([(bytes(H1), b"o", False, 1)], report=True),
        RefUpdateReply([True, False]),
        BlocksHeldQuery([H1, H2]),
        BlocksHeldReply([False, True]),
        OwnedQuery(b"snap", b"", 10),
        OwnedQuery(b"snap", bytes(H1), 4096),
        OwnedReply([(H1, False), (H2, True)], True),
    ],
)
def test_app_messages_round_trip(message: Message) -> None:
    assert message_from_map(message_to_map(message)) == message


def test_report_is_sent_only_when_asked() -> None:
    assert "report" not in message_to_map(RefUpdate([(bytes(H1), b"o", False, 1)]))
    plain = message_from_map({"type": "RefUpdate", "entries": [[bytes(H1), b"o", False, 1]]})
    assert isinstance(plain, RefUpdate) and not plain.report


@pytest.mark.parametrize(
    "fields",
    [
        {"type": "RefUpdate", "entries": [[bytes(H1), b"o", False, 1]], "report": 1},
        {"type": "RefUpdateReply", "missing": [1]},
        {"type": "RefUpdateReply", "missing": [False] * 4097},
        {"type": "BlocksHeldQuery", "hashes": []},
        {"type": "BlocksHeldQuery", "hashes": [bytes(H1)] * 1025},
        {"type": "BlocksHeldQuery", "hashes": [b"short"]},
        {"type": "BlocksHeldReply", "held": [False] * 1025},
        {"type": "OwnedQuery", "owner": b"", "after": b"", "limit": 1},
        {"type": "OwnedQuery", "owner": b"x" * 129, "after": b"", "limit": 1},
        {"type": "OwnedQuery", "owner": b"x", "after": b"abc", "limit": 1},
        {"type": "OwnedQuery", "owner": b"x", "after": b"", "limit": 0},
        {"type": "OwnedQuery", "owner": b"x", "after": b"", "limit": 4097},
        {"type": "OwnedReply", "entries": [[bytes(H1)]], "more": False},
        {"type": "OwnedReply", "entries": [[bytes(H1), 0]], "more": False},
        {"type": "OwnedReply", "entries": [], "more": None},
    ],
)
def test_malformed_app_messages_raise_protocol_error(fields: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError):
        message_from_map(fields)


class AppHandler(FakeHandler):
    """A handler that knows the application's calls (an up-to-date node)."""

    async def rpc_ref_update_report(self, peer: str, entries: list[Any]) -> list[bool]:
        await self.rpc_ref_update(peer, entries)
        return [not e[2] and Hash(e[0]) not in self.blocks for e in entries]

    async def rpc_blocks_held(self, hashes: list[Hash]) -> list[bool]:
        return [h in self.blocks for h in hashes]

    async def rpc_owned(
        self, owner: bytes, after: bytes, limit: int
    ) -> tuple[list[tuple[Hash, bool]], bool]:
        rows = sorted(
            (Hash(h), e[2]) for (h, o), e in self.refs.items() if o == owner and h > after
        )
        return rows[:limit], len(rows) > limit


@asynccontextmanager
async def pair(handler: FakeHandler) -> AsyncIterator[RpcNode]:
    net = MemoryNetwork()
    transports = {"a": net.transport("a"), "b": net.transport("b")}
    async with open_rpc_nodes(transports, handlers={"b": handler}) as nodes:
        yield nodes["a"]


async def test_an_older_peer_answers_ok_and_says_nothing() -> None:
    handler = FakeHandler()  # no rpc_ref_update_report: written before the report
    async with pair(handler) as a:
        entries = [(bytes(H1), b"o", False, 1)]
        assert await a.ref_update("b", entries, background=False, report=True) is None
        assert handler.refs == {(bytes(H1), b"o"): entries[0]}


async def test_an_up_to_date_peer_reports_missing_blocks_held_and_owned_rows() -> None:
    handler = AppHandler()
    async with pair(handler) as a:
        entries = [(bytes(H1), b"o", False, 1), (bytes(H2), b"o", True, 1)]
        assert await a.ref_update("b", entries, background=False, report=True) == [True, False]
        assert await a.ref_update("b", entries, background=False) is None  # not asked
        assert await a.blocks_held("b", [H1, H2] * 700) == [False] * 1400  # two requests
        rows, more = await a.owned("b", b"o", b"", 1)
        assert rows == [(H1, False)] and more
        assert await a.owned("b", b"o", bytes(H1), 5) == ([(H2, True)], False)


async def test_rows_out_of_order_are_a_protocol_error() -> None:
    class Disorderly(AppHandler):
        async def rpc_owned(
            self, owner: bytes, after: bytes, limit: int
        ) -> tuple[list[tuple[Hash, bool]], bool]:
            return [(H2, False), (H1, False)], False

    async with pair(Disorderly()) as a:
        with pytest.raises(ProtocolError):
            await a.owned("b", b"o", b"", 5)
