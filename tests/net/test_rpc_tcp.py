"""``RpcNode`` over ``TcpTransport`` on 127.0.0.1, with and without TLS."""

from __future__ import annotations

import logging
import ssl

import pytest
import trio
import trio.testing
import trustme

from trioblock._net.rpc import RpcNode
from trioblock._net.tcp import TcpTransport
from trioblock._net.transport import Transport
from trioblock.errors import MissingBlockError, TransportError

from .conftest import SECRET, FakeHandler, block_of


async def exercise(client: TcpTransport, server: TcpTransport) -> None:
    handler = FakeHandler()
    a = RpcNode("a", client, SECRET, timeout=10)
    b = RpcNode("b", server, SECRET, timeout=10)
    async with trio.open_nursery() as nursery:
        await nursery.start(b.serve, handler)
        assert server.listen_address is not None
        client.add_peer("b", server.listen_address)
        h, block = block_of(b"over tcp" * 300_000, compressed=True)
        await a.put_block("b", h, block)
        assert await a.get_block("b", h) == block
        assert await a.need_block("b", h) is False
        with pytest.raises(MissingBlockError):
            await a.get_block("b", block_of(b"absent")[0])
        assert (await a.admin("b", {"op": "ping"}))["echo"] == {"op": "ping"}
        assert a.stats.connections_opened == 1
        await a.aclose()
        nursery.cancel_scope.cancel()


async def test_rpc_over_tcp_with_port_zero() -> None:
    server = TcpTransport(listen=("127.0.0.1", 0))
    assert isinstance(server, Transport)
    before = server.listen_address
    assert before is None
    await exercise(TcpTransport(), server)
    address = server.listen_address
    assert address is not None
    assert address[1] != 0


async def test_rpc_over_tls(tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    server_ctx, client_ctx = tls_contexts
    server = TcpTransport(listen=("127.0.0.1", 0), server_ssl_context=server_ctx)
    await exercise(TcpTransport(ssl_context=client_ctx), server)


async def test_client_without_the_ca_fails_cleanly(
    tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server_ctx, _ = tls_contexts
    server = TcpTransport(listen=("127.0.0.1", 0), server_ssl_context=server_ctx)
    handler = FakeHandler()
    b = RpcNode("b", server, SECRET)
    async with trio.open_nursery() as nursery:
        await nursery.start(b.serve, handler)
        assert server.listen_address is not None
        untrusting = TcpTransport(
            peers={"b": server.listen_address}, ssl_context=ssl.create_default_context()
        )
        a = RpcNode("a", untrusting, SECRET)
        with pytest.raises(TransportError, match="TLS"):
            await a.need_block("b", block_of(b"x")[0])
        assert handler.calls == []
        await a.aclose()
        nursery.cancel_scope.cancel()


async def test_unknown_and_unreachable_peers_raise_transport_error() -> None:
    transport = TcpTransport()
    with pytest.raises(TransportError, match="unknown node"):
        await transport.connect("nobody")
    server = TcpTransport(listen=("127.0.0.1", 0))
    address = await server.bind()
    await server.aclose()  # bound, then released: nothing listens there any more
    transport.add_peer("gone", address)
    with pytest.raises(TransportError, match="cannot connect"):
        await transport.connect("gone")
    transport.remove_peer("gone")
    assert transport.peers == {}


async def test_serve_again_keeps_the_port_chosen_first() -> None:
    server = TcpTransport(listen=("127.0.0.1", 0))
    scope = trio.CancelScope()

    async def serve_once(*, task_status: trio.TaskStatus[None]) -> None:
        with scope:
            await server.serve(trio.aclose_forcefully, task_status=task_status)

    async with trio.open_nursery() as nursery:
        await nursery.start(serve_once)
        first = server.listen_address
        scope.cancel()
        await trio.testing.wait_all_tasks_blocked()
        await nursery.start(server.serve, trio.aclose_forcefully)
        assert server.listen_address == first
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("client_cert", ["other CA", "none"])
async def test_a_client_certificate_the_cluster_ca_did_not_sign_is_named(
    client_cert: str, tls_ca: trustme.CA, caplog: pytest.LogCaptureFixture
) -> None:
    """Mutual TLS: the refused side is told its certificate was refused, not "broken"."""
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    tls_ca.configure_trust(server_ctx)
    client_ctx = ssl.create_default_context()
    tls_ca.configure_trust(client_ctx)
    if client_cert == "other CA":
        trustme.CA().issue_cert("intruder").configure_cert(client_ctx)
    server = TcpTransport(listen=("127.0.0.1", 0), server_ssl_context=server_ctx)
    handler = FakeHandler()
    b = RpcNode("b", server, SECRET)
    async with trio.open_nursery() as nursery:
        await nursery.start(b.serve, handler)
        assert server.listen_address is not None
        client = TcpTransport(peers={"b": server.listen_address}, ssl_context=client_ctx)
        a = RpcNode("a", client, SECRET, timeout=10)
        with pytest.raises(TransportError, match=r"TLS handshake refused.*certificate"):
            await a.need_block("b", block_of(b"x")[0])
        assert handler.calls == []
        await a.aclose()
        nursery.cancel_scope.cancel()
    refused = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("refused the certificate" in r.getMessage() for r in refused)


async def test_a_client_with_a_signed_certificate_is_served(
    tls_ca: trustme.CA,
) -> None:
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    tls_ca.configure_trust(server_ctx)
    client_ctx = ssl.create_default_context()
    tls_ca.configure_trust(client_ctx)
    tls_ca.issue_cert("n1").configure_cert(client_ctx)
    server = TcpTransport(listen=("127.0.0.1", 0), server_ssl_context=server_ctx)
    await exercise(TcpTransport(ssl_context=client_ctx), server)


async def test_a_tcp_transport_is_an_async_context_manager() -> None:
    async with TcpTransport(listen=("127.0.0.1", 0)) as transport:
        host, port = await transport.bind()
        assert port > 0
    # Closed on the way out: the port can be bound again at once.
    async with TcpTransport(listen=(host, port)) as again:
        assert (await again.bind())[1] == port
