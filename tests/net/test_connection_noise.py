"""What a node logs when peers go away: cancelled connects and lost transfers are not attacks."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

from trioblock._net.channel import Channel
from trioblock._net.codec import FrameCodec
from trioblock._net.handshake import client_handshake
from trioblock._net.messages import PutBlock
from trioblock._net.rpc import RpcNode
from trioblock._net.transport import StreamHandler
from trioblock.errors import AuthenticationError
from trioblock.testing import MemoryNetwork

from .conftest import SECRET, FakeHandler, block_of, open_rpc_nodes


class RecordingStream(trio.abc.Stream):
    """A stream that records each ``send_all`` (to see what a server writes, and when)."""

    def __init__(self, inner: trio.abc.Stream, log: list[bytes]) -> None:
        self.inner = inner
        self.log = log

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.log.append(bytes(data))
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()


class RecordingTransport:
    """Wraps a transport; every served stream records its writes in :attr:`writes`."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.writes: list[list[bytes]] = []

    async def connect(self, node_id: str) -> trio.abc.Stream:
        return await self.inner.connect(node_id)  # type: ignore[no-any-return]

    async def serve(
        self, handler: StreamHandler, *, task_status: Any = trio.TASK_STATUS_IGNORED
    ) -> None:
        async def wrapped(stream: trio.abc.Stream) -> None:
            self.writes.append([])
            await handler(RecordingStream(stream, self.writes[-1]))

        await self.inner.serve(wrapped, task_status=task_status)


@asynccontextmanager
async def pair() -> AsyncIterator[tuple[MemoryNetwork, RpcNode, RpcNode, RecordingTransport]]:
    net = MemoryNetwork()
    b_transport = RecordingTransport(net.transport("b"))
    transports = {"a": net.transport("a"), "b": b_transport}
    async with open_rpc_nodes(transports, handlers={"b": FakeHandler()}) as nodes:  # type: ignore[dict-item]
        yield net, nodes["a"], nodes["b"], b_transport


def loud(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]


@pytest.mark.parametrize("cancel_at", [1.5, 2.5])
async def test_a_request_cancelled_while_connecting_is_no_warning(
    cancel_at: float,
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A hedged read's loser (or a GC query) cancelled mid-handshake: quiet on the peer."""
    caplog.set_level(logging.DEBUG, logger="trioblock.net")
    async with pair() as (net, a, b, _):
        net.set_delay("a", 1.0)  # each connect and send of "a" takes a second
        with trio.move_on_after(cancel_at):  # before Hello (1.5) or before Auth (2.5)
            await a.need_block("b", block_of(b"x")[0])
            pytest.fail("the request should have been cancelled")
        await trio.testing.wait_all_tasks_blocked()
        await trio.sleep(5)
        assert loud(caplog) == []
        assert b.stats.handshakes_rejected == 0
        assert any("during the handshake" in r.getMessage() for r in caplog.records)
        net.heal()
        assert await a.need_block("b", block_of(b"x")[0]) is True


async def test_a_wrong_secret_is_still_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    async with pair() as (net, _, b, _):
        intruder = RpcNode("a", net.transport("a"), b"not the secret")
        with pytest.raises(AuthenticationError):
            await intruder.need_block("b", block_of(b"x")[0])
        await trio.testing.wait_all_tasks_blocked()
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert any("handshake failed" in r.getMessage() for r in warnings)
        assert b.stats.handshakes_rejected == 1


@pytest.mark.parametrize("cut", ["mid-frame", "mid-body"])
async def test_a_peer_lost_mid_transfer_is_logged_quietly_and_not_answered(
    cut: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="trioblock.net")
    async with pair() as (net, a, _b, recording):
        h, block = block_of(b"p" * 1000)
        channel = Channel(await net.transport("a").connect("b"), peer="b")
        await client_handshake(channel, node_id="a", expected_peer="b", secret=SECRET)
        codec = FrameCodec()
        wire = codec.send_message(PutBlock(h, block.header)) + codec.send_body_chunk(
            bytes(block.payload)
        )
        if cut == "mid-frame":
            wire = wire[:-10]  # the chunk's frame is cut short
        await channel.stream.send_all(wire)
        await trio.testing.wait_all_tasks_blocked()
        writes_before_close = len(recording.writes[0])
        await channel.aclose()  # the peer dies
        await trio.testing.wait_all_tasks_blocked()
        assert loud(caplog) == []
        assert any("lost" in r.getMessage() for r in caplog.records)
        assert len(recording.writes[0]) == writes_before_close  # nothing sent to the dead peer
        assert await a.need_block("b", h) is True  # the node carries on
