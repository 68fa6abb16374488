"""The node's answers to peers: the ``RpcHandler`` the RPC server calls.

- ``GetBlock``: the verified local copy, encoded as stored (a corrupt copy is
  quarantined and queued, and the peer gets a ``corrupt`` error);
- ``PutBlock``: the body is received within the byte budget (a bounded wait: two large
  receives must not hold half the budget each and wait for each other forever), verified
  against its hash, and only then written durably;
- ``NeedBlockQuery``: referenced here and no local copy?
- ``Admin``: handed to the operator handler installed with ``open_block_manager(...,
  admin_handler=...)``; refused when there is none.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import trio

from .._core.block import BlockHeader, DataBlock, decode_block
from .._core.hashing import Hash
from .._core.refs import RefTuple
from .._net.rpc import AdminResult
from .._storage.offload import run_blocking
from ..errors import MissingBlockError, TransportError, TrioblockError
from .context import NodeContext
from .reads import Reader
from .references import References
from .writes import Writer

#: What serves ``Admin`` requests: ``await handler(request, body)``.
AdminCallback = Callable[[dict[str, Any], "bytes | None"], Awaitable[AdminResult]]


class AdminUnavailableError(TrioblockError):
    """This node takes no operator requests (no admin handler installed)."""


class RpcEndpoint:
    """Implements the RPC layer's ``RpcHandler`` for one node."""

    def __init__(
        self,
        ctx: NodeContext,
        reader: Reader,
        writer: Writer,
        references: References,
        admin: AdminCallback | None = None,
    ) -> None:
        self._ctx = ctx
        self._reader = reader
        self._writer = writer
        self._references = references
        self._admin = admin

    async def rpc_get_block(self, hash: Hash, order_tag: int | None) -> DataBlock:
        """A peer's ``GetBlock``: the verified local copy, encoded as stored."""
        local = await self._reader.read_local(hash)
        if local is None:
            raise MissingBlockError(hash)
        return local[1]

    async def rpc_put_block(
        self, hash: Hash, header: BlockHeader, body: AsyncIterator[bytes]
    ) -> None:
        """A peer's ``PutBlock``: receive within the byte budget, verify, then store."""
        ctx = self._ctx
        budget = ctx.budget
        chunks: list[bytes] = []
        size = 0
        taken = 0
        try:
            async for chunk in body:
                chunks.append(chunk)
                size += len(chunk)
                wanted = min(size, budget.capacity) - taken
                if wanted > 0:
                    try:
                        with trio.fail_after(ctx.config.rpc_timeout):
                            taken += await budget.acquire(wanted)
                    except trio.TooSlowError:
                        raise TransportError(
                            f"{ctx.node_id}: receive buffer full (ram_buffer_max) for "
                            f"{ctx.config.rpc_timeout}s; try again later"
                        ) from None
            block = DataBlock(header, b"".join(chunks))
            chunks.clear()
            # Verify before anything touches the disk: a peer never makes us store
            # bytes that do not match their name.
            await run_blocking(
                lambda: decode_block(hash, block, max_size=ctx.config.max_block_size),
                limiter=ctx.cpu_limiter,
            )
            await self._writer.write_local(hash, block)
        finally:
            budget.release(taken)

    async def rpc_need_block(self, hash: Hash) -> bool:
        """A peer's ``NeedBlockQuery``: referenced here and no local copy?"""
        ctx = self._ctx
        async with ctx.store.locks.hold(hash):
            loc = await ctx.store.find(hash)
            rc = ctx.db.get_rc(hash)
        return rc.is_nonzero and loc is None

    async def rpc_admin(self, request: dict[str, Any], body: bytes | None = None) -> AdminResult:
        """An operator request: answered by the installed admin handler."""
        if self._admin is None:
            raise AdminUnavailableError(f"node {self._ctx.node_id} takes no operator requests")
        return await self._admin(request, body)

    # -- cluster references (``references.py``; ``peer`` is the authenticated sender) -------

    async def rpc_ref_update(self, peer: str, entries: list[RefTuple]) -> None:
        """Merge a peer's reference entries (its quorum writes and anti-entropy pushes)."""
        await self._references.serve_update(peer, entries)

    async def rpc_ref_digests(self, peer: str, prefixes: list[bytes]) -> list[tuple[int, bytes]]:
        """Digests of the entries shared with ``peer`` under each prefix."""
        return await self._references.serve_digests(peer, prefixes)

    async def rpc_ref_fetch(
        self, peer: str, prefix: bytes, after: bytes, limit: int
    ) -> tuple[list[RefTuple], bool]:
        """A page of the entries shared with ``peer`` under ``prefix``."""
        return await self._references.serve_fetch(peer, prefix, after, limit)

    async def rpc_ref_collect(self, peer: str, entries: list[RefTuple]) -> None:
        """Drop tombstones every storage node holds (asked by the collecting node)."""
        await self._references.serve_collect(peer, entries)


__all__ = ["AdminCallback", "AdminUnavailableError", "RpcEndpoint"]
