"""Fixtures for the network tests.

- ``FakeHandler``: an in-memory ``RpcHandler`` that verifies what it receives, counts calls
  and can be told to misbehave;
- ``open_rpc_nodes(transports, handlers=...)``: serve one ``RpcNode`` per transport and
  close them all at the end;
- ``block_of(data, compressed=False)``: a ``(hash, DataBlock)`` pair;
- TLS material from ``trustme`` (``tls_contexts``).
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trustme

from trioblock._core.block import BlockHeader, DataBlock, decode_block, encode_block
from trioblock._core.hashing import Hash, blake2sum
from trioblock._net.messages import RefTuple
from trioblock._net.rpc import RpcNode
from trioblock._net.transport import Transport
from trioblock.errors import CorruptBlockError, MissingBlockError

SECRET = b"test-cluster-secret"


def block_of(data: bytes, *, compressed: bool = False) -> tuple[Hash, DataBlock]:
    """The hash of ``data`` and its encoding (zstd level 1 when ``compressed``)."""
    return blake2sum(data), encode_block(data, 1 if compressed else None)


class FakeHandler:
    """An ``RpcHandler`` keeping blocks in a dict; it verifies every put, as a node does."""

    def __init__(self) -> None:
        self.blocks: dict[Hash, DataBlock] = {}
        self.calls: list[tuple[str, Any]] = []
        self.active = 0
        self.max_active = 0
        #: Awaited (if set) at the start of every call: lets tests stall the handler.
        self.gate: trio.Event | None = None
        #: Put: raise this before reading the body.
        self.reject_put: Exception | None = None
        #: Get: raise this instead of answering.
        self.fail_get: Exception | None = None
        #: Reference entries merged, by (hash, owner); collected ones are removed.
        self.refs: dict[tuple[bytes, bytes], RefTuple] = {}
        #: Ref requests: raise this instead of answering.
        self.fail_refs: Exception | None = None
        #: Ref digests / fetch: return this instead of the real answer (a buggy handler).
        self.bad_ref_answer: Any = None

    async def _enter(self, name: str, arg: Any) -> None:
        self.calls.append((name, arg))
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        if self.gate is not None:
            await self.gate.wait()

    async def rpc_get_block(self, hash: Hash, order_tag: int | None) -> DataBlock:
        await self._enter("get", (hash, order_tag))
        try:
            if self.fail_get is not None:
                raise self.fail_get
            try:
                return self.blocks[hash]
            except KeyError:
                raise MissingBlockError(hash) from None
        finally:
            self.active -= 1

    async def rpc_put_block(
        self, hash: Hash, header: BlockHeader, body: AsyncIterator[bytes]
    ) -> None:
        await self._enter("put", hash)
        try:
            if self.reject_put is not None:
                raise self.reject_put
            payload = b"".join([chunk async for chunk in body])
            block = DataBlock(header, payload)
            try:
                decode_block(hash, block)
            except CorruptBlockError:
                raise
            self.blocks[hash] = block
        finally:
            self.active -= 1

    async def rpc_need_block(self, hash: Hash) -> bool:
        await self._enter("need", hash)
        try:
            return hash not in self.blocks
        finally:
            self.active -= 1

    async def rpc_corrupt_report(self, peer: str, hash: Hash) -> None:
        await self._enter("corrupt", (peer, hash))
        self.active -= 1

    async def rpc_admin(self, request: dict[str, Any]) -> dict[str, Any]:
        await self._enter("admin", request)
        try:
            if request.get("op") == "crash":
                raise ValueError("handler bug")
            if request.get("op") == "refuse":
                raise MissingBlockError(b"\x00" * 32)
            return {"echo": request, "blocks": len(self.blocks)}
        finally:
            self.active -= 1

    async def _enter_ref(self, name: str, arg: Any) -> None:
        await self._enter(name, arg)
        self.active -= 1
        if self.fail_refs is not None:
            raise self.fail_refs

    async def rpc_ref_update(self, peer: str, entries: list[RefTuple]) -> None:
        await self._enter_ref("ref_update", (peer, entries))
        for entry in entries:
            self.refs[entry[0], entry[1]] = entry

    async def rpc_ref_digests(self, peer: str, prefixes: list[bytes]) -> list[tuple[int, bytes]]:
        await self._enter_ref("ref_digests", (peer, prefixes))
        if self.bad_ref_answer is not None:
            return self.bad_ref_answer  # type: ignore[no-any-return]
        out = []
        for prefix in prefixes:
            chosen = sorted(e for key, e in self.refs.items() if key[0].startswith(prefix))
            out.append((len(chosen), blake2sum(repr(chosen).encode())))
        return out

    async def rpc_ref_fetch(
        self, peer: str, prefix: bytes, after: bytes, limit: int
    ) -> tuple[list[RefTuple], bool]:
        await self._enter_ref("ref_fetch", (peer, prefix, after, limit))
        if self.bad_ref_answer is not None:
            return self.bad_ref_answer  # type: ignore[no-any-return]
        keys = sorted(k for k in self.refs if k[0].startswith(prefix) and k[0] + k[1] > after)
        return [self.refs[k] for k in keys[:limit]], len(keys) > limit

    async def rpc_ref_collect(self, peer: str, entries: list[RefTuple]) -> None:
        await self._enter_ref("ref_collect", (peer, entries))
        for entry in entries:
            self.refs.pop((entry[0], entry[1]), None)


@asynccontextmanager
async def open_rpc_nodes(
    transports: Mapping[str, Transport],
    *,
    handlers: Mapping[str, FakeHandler] | None = None,
    secret: bytes | Callable[[str], bytes] = SECRET,
    serve: bool = True,
    **kwargs: Any,
) -> AsyncIterator[dict[str, RpcNode]]:
    """One ``RpcNode`` per transport, serving its handler (if ``serve``) until exit."""
    nodes: dict[str, RpcNode] = {}
    async with trio.open_nursery() as nursery:
        for node_id, transport in transports.items():
            key = secret(node_id) if callable(secret) else secret
            node = RpcNode(node_id, transport, key, **kwargs)
            nodes[node_id] = node
            if serve and handlers is not None and node_id in handlers:
                await nursery.start(node.serve, handlers[node_id])
        try:
            yield nodes
        finally:
            for node in nodes.values():
                await node.aclose()
            nursery.cancel_scope.cancel()


@pytest.fixture(scope="session")
def tls_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="session")
def tls_contexts(tls_ca: trustme.CA) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """``(server_context, client_context)`` for a certificate valid for 127.0.0.1."""
    cert = tls_ca.issue_cert("127.0.0.1", "localhost")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server)
    client = ssl.create_default_context()
    tls_ca.configure_trust(client)
    return server, client
