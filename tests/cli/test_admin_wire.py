"""Admin requests and replies with bodies on the wire (``RpcNode.admin_with_body``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from trioblock._net.codec import MAX_MESSAGE_SIZE
from trioblock._net.messages import Admin, AdminReply, has_body, message_from_map, message_to_map
from trioblock._net.rpc import AdminRequestFailed, RpcNode
from trioblock.errors import AuthenticationError, MissingBlockError, TrioblockError
from trioblock.testing import MemoryNetwork

SECRET = b"admin-wire-secret"


class BodyHandler:
    """Answers ``reverse`` with the reversed body, ``fetch`` with a large body."""

    def __init__(self) -> None:
        self.bodies: list[bytes | None] = []

    async def rpc_admin(
        self, request: dict[str, Any], body: bytes | None = None
    ) -> dict[str, Any] | tuple[dict[str, Any], bytes]:
        self.bodies.append(body)
        if request["op"] == "reverse":
            assert body is not None
            return {"size": len(body)}, body[::-1]
        if request["op"] == "fetch":
            return {"size": request["size"]}, b"z" * request["size"]
        if request["op"] == "missing":
            raise MissingBlockError(b"\x01" * 32, "no such block here")
        if request["op"] == "refuse":
            raise TrioblockError("cannot do that now")
        return {"echo": request}


class LegacyHandler:
    """A handler from before admin bodies: ``rpc_admin(request)`` only."""

    async def rpc_admin(self, request: dict[str, Any]) -> dict[str, Any]:
        return {"echo": request}


@asynccontextmanager
async def client_and_server(handler: Any, client_secret: bytes = SECRET) -> AsyncIterator[RpcNode]:
    net = MemoryNetwork()
    server = RpcNode("srv", net.transport("srv"), SECRET)
    client = RpcNode("cli-test", net.transport("cli-test"), client_secret, timeout=10)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve, handler)
        try:
            yield client
        finally:
            await client.aclose()
            await server.aclose()
            nursery.cancel_scope.cancel()


def test_body_flag_is_on_the_wire_only_when_set() -> None:
    assert message_to_map(Admin({"op": "x"})) == {"type": "Admin", "request": {"op": "x"}}
    with_body = message_to_map(AdminReply({"a": 1}, with_body=True))
    assert with_body == {"type": "AdminReply", "reply": {"a": 1}, "body": True}
    assert message_from_map(with_body) == AdminReply({"a": 1}, with_body=True)
    assert has_body(Admin({}, with_body=True)) and not has_body(Admin({}))


async def test_bodies_larger_than_a_frame_travel_both_ways() -> None:
    handler = BodyHandler()
    payload = bytes(range(256)) * (3 * MAX_MESSAGE_SIZE // 256)
    async with client_and_server(handler) as client:
        reply, body = await client.admin_with_body("srv", {"op": "reverse"}, payload)
        assert reply == {"size": len(payload)}
        assert body == payload[::-1]
        reply, body = await client.admin_with_body("srv", {"op": "fetch", "size": 2_000_000})
        assert body == b"z" * 2_000_000
        # A plain request on the same (pooled) connection still works.
        assert await client.admin("srv", {"op": "ping"}) == {"echo": {"op": "ping"}}
        assert client.stats.connections_opened == 1
    assert handler.bodies[0] == payload


async def test_errors_keep_the_node_message_and_kind() -> None:
    async with client_and_server(BodyHandler()) as client:
        with pytest.raises(AdminRequestFailed) as missing:
            await client.admin("srv", {"op": "missing"})
        assert missing.value.kind == "missing"
        assert missing.value.remote_message == "no such block here"
        with pytest.raises(AdminRequestFailed) as refused:
            await client.admin("srv", {"op": "refuse"})
        assert refused.value.kind == "refused"
        assert refused.value.remote_message == "cannot do that now"


async def test_handlers_without_body_support_still_work() -> None:
    async with client_and_server(LegacyHandler()) as client:
        assert await client.admin("srv", {"op": "ping"}) == {"echo": {"op": "ping"}}


async def test_a_wrong_secret_never_reaches_the_handler() -> None:
    handler = BodyHandler()
    async with client_and_server(handler, client_secret=b"wrong") as client:
        with pytest.raises(AuthenticationError):
            await client.admin("srv", {"op": "ping"})
    assert handler.bodies == []
