"""Layout messages on the wire, and a node's answer to bad layout histories."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cbor2
import pytest

import trioblock
from trioblock._net.messages import (
    LayoutExchange,
    LayoutExchangeReply,
    message_from_map,
    message_to_map,
)
from trioblock._net.rpc import RpcNode
from trioblock.errors import ProtocolError
from trioblock.testing import open_cluster

D = bytes(range(32))


@pytest.mark.parametrize(
    "message",
    [
        LayoutExchange(D),
        LayoutExchange(D, with_body=True, addresses={"n1": "10.0.0.1:3901"}),
        LayoutExchangeReply(D),
        LayoutExchangeReply(D, with_body=True, addresses={"n2": "[::1]:3901"}),
    ],
)
def test_layout_messages_round_trip(message: Any) -> None:
    wire = cbor2.loads(cbor2.dumps(message_to_map(message)))
    assert message_from_map(wire) == message


@pytest.mark.parametrize(
    "fields",
    [
        {},  # no digest
        {"digest": b"short"},
        {"digest": D, "body": "yes"},
        {"digest": D, "addresses": ["n1"]},
        {"digest": D, "addresses": {"": "h:1"}},
        {"digest": D, "addresses": {"n1": 7}},
        {"digest": D, "addresses": {"n1": "x" * 301}},
        {"digest": D, "addresses": {f"n{i}": "h:1" for i in range(1025)}},
    ],
)
@pytest.mark.parametrize("kind", ["LayoutExchange", "LayoutExchangeReply"])
def test_bad_layout_fields_are_protocol_errors(kind: str, fields: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError):
        message_from_map({"type": kind, **fields})


@pytest.mark.parametrize(
    "body",
    [
        b"\xff\x00not cbor",
        cbor2.dumps([1, 2, 3]),
        cbor2.dumps({"live": [{"version": 2}], "records": [], "reports": {}}),
        cbor2.dumps({"live": [], "records": [], "reports": {"n9": [1, 2]}}),
    ],
)
async def test_a_bad_history_is_refused_and_changes_nothing(
    tmp_path: Path, autojump_clock: object, body: bytes
) -> None:
    async with open_cluster(tmp_path, n=3) as c:
        n0 = c.nodes["n0"]
        before = n0.layout_status()
        rogue = RpcNode("rogue", c.net.transport("rogue"), c.rpc_secret)
        try:
            with pytest.raises(ProtocolError):
                await rogue.layout_exchange("n0", D, body)
        finally:
            await rogue.aclose()
        assert n0.layout_status() == before
        # The node still serves.
        h = await c.nodes["n1"].put_block(b"still here")
        assert await n0.get_block(h) == b"still here"
        assert isinstance(n0.layout, trioblock.LayoutVersion)
