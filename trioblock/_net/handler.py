"""``RpcHandler``: what a node does with the requests its peers send.

The RPC server (:mod:`.server`) calls these methods; the node implements them. A method
reports failure by raising: a :class:`~trioblock.errors.TrioblockError` becomes an
``Error`` reply of the matching kind (see :mod:`.errormap`), anything else an ``internal``
reply and a logged traceback. ``peer`` is the node id the connection authenticated as.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from typing import Any, Protocol, TypeAlias

from .._core.block import BlockHeader, DataBlock
from .._core.hashing import Hash
from .messages import PutEntry, RefTuple

__all__ = ["AdminReplyBody", "AdminResult", "RpcHandler"]

#: A reply map and, optionally, the body that follows it (the answer of ``rpc_admin``).
AdminReplyBody: TypeAlias = tuple[dict[str, Any], bytes | bytearray | memoryview]
AdminResult: TypeAlias = dict[str, Any] | AdminReplyBody


class RpcHandler(Protocol):
    """What a node does with the requests it receives (implemented by the node)."""

    async def rpc_get_block(self, hash: Hash, order_tag: int | None) -> DataBlock:
        """The stored encoding of ``hash``, possibly unverified (the requester verifies
        and reports a bad copy with ``rpc_corrupt_report``); ``MissingBlockError`` /
        ``CorruptBlockError``."""
        ...

    async def rpc_get_blocks(self, hashes: list[Hash]) -> list[DataBlock | BaseException | None]:
        """The stored encoding of each of ``hashes``, as :meth:`rpc_get_block` gives it
        (``GetBlocks``): one outcome per hash, in order, for the first 1..all of them (a
        handler stops once the blocks read reach ``MAX_GET_BLOCKS_BYTES``): the block,
        None when there is no copy here, or the exception that failed it.

        Optional: a handler without it refuses ``GetBlocks`` as an older peer does (the
        asker then sends one ``GetBlock`` per block).
        """
        ...

    async def rpc_put_block(
        self, hash: Hash, header: BlockHeader, body: AsyncIterator[bytes]
    ) -> None:
        """Verify and store a block streamed by a peer; ``CorruptBlockError`` if it is bad."""
        ...

    async def rpc_put_blocks(
        self, blocks: list[PutEntry], body: AsyncIterable[tuple[int, bytes]]
    ) -> list[BaseException | None]:
        """Verify and store several blocks streamed by a peer (``PutBlocks``): ``body``
        gives each chunk with the index of its block. One outcome per block, in order:
        None when it is durably stored, else the exception that failed it.

        Optional: a handler without it refuses ``PutBlocks`` as an older peer does (the
        sender then sends one ``PutBlock`` per block).
        """
        ...

    async def rpc_need_block(self, hash: Hash) -> bool:
        """Whether this node needs (is missing and should hold) ``hash``."""
        ...

    async def rpc_need_blocks(self, hashes: list[Hash]) -> list[bool]:
        """:meth:`rpc_need_block` for each of ``hashes``, in order (a peer's batch query).

        Optional: for a handler without it, the server asks :meth:`rpc_need_block` once
        per hash.
        """
        ...

    async def rpc_corrupt_report(self, peer: str, hash: Hash) -> None:
        """``peer`` found the copy of ``hash`` served from here corrupt: check ours."""
        ...

    async def rpc_admin(self, request: dict[str, Any], body: bytes | None = None) -> AdminResult:
        """Answer an operator request (maps of plain data, opaque to the network layer).

        ``body`` is the request's body, if it had one; return a reply map, or a reply
        map and a body to stream after it.
        """
        ...

    async def rpc_ref_update(self, peer: str, entries: list[RefTuple]) -> None:
        """Merge reference entries ``(hash, owner, deleted, ts)`` sent by ``peer``."""
        ...

    async def rpc_ref_update_report(self, peer: str, entries: list[RefTuple]) -> list[bool]:
        """:meth:`rpc_ref_update`, then one flag per entry: True when it left an alive
        reference here to a block this node holds no copy of (a ``RefUpdate`` with
        ``report``). Optional: without it, such a request is answered a plain ``Ok``."""
        ...

    async def rpc_blocks_held(self, hashes: list[Hash]) -> list[bool]:
        """Whether this node holds a copy of each of ``hashes``, in order."""
        ...

    async def rpc_owned(
        self, owner: bytes, after: bytes, limit: int
    ) -> tuple[list[tuple[Hash, bool]], bool]:
        """Up to ``limit`` of this node's rows of ``owner`` after hash ``after`` (empty:
        from the start), as ``(hash, deleted)`` in hash order; and whether more follow."""
        ...

    async def rpc_ref_digests(self, peer: str, prefixes: list[bytes]) -> list[tuple[int, bytes]]:
        """``(count, 32-byte digest)`` of the references under each hash prefix, in order."""
        ...

    async def rpc_ref_fetch(
        self, peer: str, prefix: bytes, after: bytes, limit: int
    ) -> tuple[list[RefTuple], bool]:
        """Up to ``limit`` entries under ``prefix`` after resume key ``after``; and more?"""
        ...

    async def rpc_ref_collect(self, peer: str, entries: list[RefTuple]) -> None:
        """Drop the tombstones ``entries`` (every storage node holds them)."""
        ...

    async def rpc_layout_exchange(
        self, peer: str, digest: bytes, history: bytes | None, addresses: dict[str, str]
    ) -> tuple[bytes, bytes | None, dict[str, str]]:
        """Merge ``peer``'s layout history (when sent) and learn the ``addresses`` it
        knows; return our digest after the merge, our encoded history when it differs
        from ``digest``, and the addresses we know. A history that does not decode or
        check raises ``ProtocolError``."""
        ...

    async def rpc_node_report(self, peer: str, what: str, hash: Hash | None) -> dict[str, Any]:
        """An operator report of this node for ``peer``: ``"block"`` (about ``hash``) or
        ``"stats"``, as a map of plain data."""
        ...
