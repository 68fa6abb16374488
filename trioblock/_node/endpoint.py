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
from ..errors import TrioblockError
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

    # Cluster references: the wire messages exist; this node does not hold references yet.
    # A peer asking gets a ``refused`` error reply saying so.

    async def rpc_ref_update(self, peer: str, entries: list[RefTuple]) -> None:
        raise _references_unsupported()

    async def rpc_ref_digests(self, peer: str, prefixes: list[bytes]) -> list[tuple[int, bytes]]:
        raise _references_unsupported()

    async def rpc_ref_fetch(
        self, peer: str, prefix: bytes, after: bytes, limit: int
    ) -> tuple[list[RefTuple], bool]:
        raise _references_unsupported()

    async def rpc_ref_collect(self, peer: str, entries: list[RefTuple]) -> None:
        raise _references_unsupported()


def _references_unsupported() -> TrioblockError:
    return TrioblockError("cluster references are not supported by this node yet")
