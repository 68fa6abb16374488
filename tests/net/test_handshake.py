"""The mutual handshake: success, wrong secret, wrong node, replay/reflection, timeouts."""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing

from trioblock._net.channel import Channel
from trioblock._net.handshake import client_handshake, compute_proof, server_handshake
from trioblock._net.messages import PROTOCOL_VERSION, Auth, Hello
from trioblock._net.rpc import RpcNode
from trioblock.errors import AuthenticationError, ProtocolError, TransportError
from trioblock.testing._memory import MemoryNetwork

from .conftest import SECRET, FakeHandler, block_of, open_rpc_nodes


def channels() -> tuple[Channel, Channel]:
    a, b = trio.testing.memory_stream_pair()
    return Channel(a), Channel(b)


async def run_both(
    client_secret: bytes, server_secret: bytes, *, expected_peer: str = "srv"
) -> tuple[BaseException | None, BaseException | str]:
    """Run both sides; return (client outcome, server outcome or proven peer id)."""
    client, server = channels()
    outcome: dict[str, BaseException | str | None] = {}

    async def run_client() -> None:
        try:
            await client_handshake(
                client, node_id="cli", expected_peer=expected_peer, secret=client_secret
            )
            outcome["client"] = None
        except Exception as exc:
            outcome["client"] = exc
        await client.aclose()

    async def run_server() -> None:
        try:
            outcome["server"] = await server_handshake(server, node_id="srv", secret=server_secret)
        except Exception as exc:
            outcome["server"] = exc
        await server.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_client)
        nursery.start_soon(run_server)
    client_result = outcome["client"]
    server_result = outcome["server"]
    assert not isinstance(client_result, str) and server_result is not None
    return client_result, server_result


async def test_same_secret_authenticates_both_sides() -> None:
    client, server = await run_both(b"k", b"k")
    assert client is None
    assert server == "cli"


async def test_wrong_secret_fails_on_both_sides() -> None:
    client, server = await run_both(b"k", b"other")
    assert isinstance(client, AuthenticationError)
    assert isinstance(server, AuthenticationError)


async def test_client_refuses_a_server_with_another_node_id() -> None:
    client, _ = await run_both(b"k", b"k", expected_peer="someone-else")
    assert isinstance(client, AuthenticationError)
    assert "someone-else" in str(client)


async def test_version_mismatch_is_a_protocol_error() -> None:
    client, server = channels()
    async with trio.open_nursery() as nursery:

        async def old_client() -> None:
            await client.send_message(Hello(PROTOCOL_VERSION + 1, "cli", b"n" * 32))

        nursery.start_soon(old_client)
        with pytest.raises(ProtocolError, match="version"):
            await server_handshake(server, node_id="srv", secret=b"k")


async def test_reflected_hello_is_refused() -> None:
    """A fake server echoing the client's own Hello (same nonce) cannot pass."""
    client, server = channels()
    async with trio.open_nursery() as nursery:

        async def mirror() -> None:
            hello = await server.receive_event()
            assert isinstance(hello, Hello)
            await server.send_message(Hello(hello.version, "srv", hello.nonce))

        nursery.start_soon(mirror)
        with pytest.raises(AuthenticationError, match="reflection"):
            await client_handshake(client, node_id="cli", expected_peer="srv", secret=b"k")


async def test_a_proof_from_another_connection_is_useless() -> None:
    """Replay: a proof recorded on one connection fails on the next (fresh nonces)."""
    client, server = channels()
    recorded = compute_proof(b"k", "client", b"a" * 32, b"b" * 32, "cli", "srv")
    async with trio.open_nursery() as nursery:

        async def replayer() -> None:
            await client.send_message(Hello(PROTOCOL_VERSION, "cli", b"a" * 32))
            await client.receive_event()
            await client.send_message(Auth(recorded))

        nursery.start_soon(replayer)
        with pytest.raises(AuthenticationError):
            await server_handshake(server, node_id="srv", secret=b"k")


def test_proofs_are_role_separated_and_bind_every_field() -> None:
    base = (b"k", "client", b"a" * 32, b"b" * 32, "x", "y")
    proof = compute_proof(*base)  # type: ignore[arg-type]
    assert proof != compute_proof(b"k", "server", b"a" * 32, b"b" * 32, "x", "y")
    assert proof != compute_proof(b"k", "client", b"b" * 32, b"a" * 32, "x", "y")
    assert proof != compute_proof(b"k", "client", b"a" * 32, b"b" * 32, "y", "x")
    assert proof != compute_proof(b"K", "client", b"a" * 32, b"b" * 32, "x", "y")
    # Length-prefixed ids: shifting a character between ids changes the transcript.
    assert compute_proof(b"k", "client", b"a" * 32, b"b" * 32, "ab", "c") != compute_proof(
        b"k", "client", b"a" * 32, b"b" * 32, "a", "bc"
    )


async def test_wrong_secret_never_reaches_the_handler(caplog: pytest.LogCaptureFixture) -> None:
    net = MemoryNetwork()
    handler = FakeHandler()
    transports = {"a": net.transport("a"), "b": net.transport("b")}
    secrets = {"a": b"wrong", "b": SECRET}
    with caplog.at_level(logging.INFO, logger="trioblock.net"):
        async with open_rpc_nodes(
            transports, handlers={"b": handler}, secret=secrets.__getitem__
        ) as nodes:
            h, block = block_of(b"data")
            with pytest.raises(AuthenticationError):
                await nodes["a"].put_block("b", h, block)
            with pytest.raises(AuthenticationError):
                await nodes["a"].need_block("b", h)
            assert handler.calls == []
            assert nodes["b"].stats.handshakes_rejected == 2
    assert "handshake failed" in caplog.text


async def test_silent_server_times_out_the_handshake(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = MemoryNetwork()

    async def mute(stream: trio.abc.Stream) -> None:
        async with stream:
            await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        await nursery.start(net.transport("b").serve, mute)
        node = RpcNode("a", net.transport("a"), SECRET, timeout=30, handshake_timeout=4)
        start = trio.current_time()
        with pytest.raises(TransportError, match="handshake"):
            await node.need_block("b", block_of(b"x")[0])
        assert trio.current_time() - start == pytest.approx(4)
        await node.aclose()
        nursery.cancel_scope.cancel()


async def test_silent_client_is_dropped_by_the_server(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = MemoryNetwork()
    handler = FakeHandler()
    async with open_rpc_nodes(
        {"b": net.transport("b")}, handlers={"b": handler}, handshake_timeout=3
    ) as nodes:
        stream = await net.transport("a").connect("b")
        start = trio.current_time()
        assert await stream.receive_some() == b""  # the server gave up and closed
        assert trio.current_time() - start == pytest.approx(3)
        await stream.aclose()
        assert nodes["b"].stats.handshakes_rejected == 1
