"""``check_transport`` passes on every transport trioblock ships, and catches a broken one."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from trioblock._net.tcp import TcpTransport
from trioblock.errors import TransportError
from trioblock.testing._conformance import TransportPair, check_transport
from trioblock.testing._memory import MemoryNetwork


async def test_memory_network_conforms() -> None:
    async def make_pair() -> TransportPair:
        net = MemoryNetwork()
        return net.transport("a"), net.transport("b"), "a", "b"

    await check_transport(make_pair)


@asynccontextmanager
async def tcp_pair(
    server_ctx: ssl.SSLContext | None = None, client_ctx: ssl.SSLContext | None = None
) -> AsyncIterator[TransportPair]:
    b = TcpTransport(listen=("127.0.0.1", 0), server_ssl_context=server_ctx)
    address = await b.bind()
    a = TcpTransport(peers={"b": address}, ssl_context=client_ctx)
    try:
        yield a, b, "a", "b"
    finally:
        await b.aclose()


async def test_tcp_transport_conforms() -> None:
    await check_transport(tcp_pair)


async def test_tcp_transport_with_tls_conforms(
    tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server_ctx, client_ctx = tls_contexts
    await check_transport(lambda: tcp_pair(server_ctx, client_ctx))


class LeakyTransport:
    """Wraps a memory transport but lets connect errors escape as OSError."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def connect(self, node_id: str) -> trio.abc.Stream:
        try:
            return await self.inner.connect(node_id)  # type: ignore[no-any-return]
        except TransportError as exc:
            raise OSError(str(exc)) from None

    async def serve(self, handler: Any, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        await self.inner.serve(handler, task_status=task_status)


async def test_check_transport_reports_a_contract_violation() -> None:
    async def make_pair() -> TransportPair:
        net = MemoryNetwork()
        return LeakyTransport(net.transport("a")), net.transport("b"), "a", "b"

    with pytest.raises(AssertionError, match="check_connect_unknown_node"):
        await check_transport(make_pair)
