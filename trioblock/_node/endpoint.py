"""The node's answers to peers: the ``RpcHandler`` the RPC server calls.

A thin adapter, so that the handler's method names (``rpc_put_block`` is a request from
a peer) do not collide with ``BlockManager``'s user-facing ones (``rpc_put_block`` is
"put with a known hash" in the contract).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from .._core.block import BlockHeader, DataBlock
from .._core.hashing import Hash
from .._net.messages import RefTuple
from .admin import AdminResult, answer_admin

if TYPE_CHECKING:
    from .manager import BlockManager


class RpcEndpoint:
    def __init__(self, node: BlockManager) -> None:
        self.node = node

    async def rpc_get_block(self, hash: Hash, order_tag: int | None) -> DataBlock:
        return await self.node.serve_get_block(hash, order_tag)

    async def rpc_put_block(
        self, hash: Hash, header: BlockHeader, body: AsyncIterator[bytes]
    ) -> None:
        await self.node.serve_put_block(hash, header, body)

    async def rpc_need_block(self, hash: Hash) -> bool:
        return await self.node.serve_need_block(hash)

    async def rpc_admin(self, request: dict[str, Any], body: bytes | None = None) -> AdminResult:
        # The admin module answers with a body for ``get`` and takes one for ``put``.
        return await answer_admin(self.node, request, body)

    # Cluster references (see references.py and refsync.py).

    async def rpc_ref_update(self, peer: str, entries: list[RefTuple]) -> None:
        await self.node._refs.serve_update(peer, entries)

    async def rpc_ref_digests(self, peer: str, prefixes: list[bytes]) -> list[tuple[int, bytes]]:
        return await self.node._refs.serve_digests(peer, prefixes)

    async def rpc_ref_fetch(
        self, peer: str, prefix: bytes, after: bytes, limit: int
    ) -> tuple[list[RefTuple], bool]:
        return await self.node._refs.serve_fetch(peer, prefix, after, limit)

    async def rpc_ref_collect(self, peer: str, entries: list[RefTuple]) -> None:
        await self.node._refs.serve_collect(peer, entries)
