"""Writes and replication: how a put reaches its storage nodes.

How a put travels: hash and compress once in a worker thread (``hash_and_encode``) →
for every storage node of the hash (just this one on the embedded default) write locally
(``BlockStore.write_block``, under the block's lock) or send a ``PutBlock``
(``RpcNode.put_block``) → return once ``write_quorum`` nodes acknowledged a durable
write, while the remaining sends finish in the node's nursery. The bytes in flight to
peers are bounded by the byte budget (``ram_buffer_max``).
"""

from __future__ import annotations

import logging

import trio

from .._core.block import DataBlock, hash_and_encode
from .._core.hashing import Hash
from .._storage.blockfiles import WriteOutcome
from .._storage.offload import run_blocking
from ..errors import TransportError, TrioblockError
from .context import NodeContext, PeerContext, as_hash
from .quorum import call_quorum

log = logging.getLogger("trioblock.node")


class Writer:
    """Local durable writes and quorum puts of one node."""

    def __init__(self, ctx: PeerContext) -> None:
        self._ctx = ctx
        #: this node's storage (None on a gateway, which never writes locally)
        self._local = ctx if isinstance(ctx, NodeContext) else None

    def _check_size(self, data: bytes) -> None:
        limit = self._ctx.config.max_block_size
        if len(data) > limit:
            raise ValueError(f"block of {len(data)} bytes exceeds max_block_size ({limit})")

    async def encode(self, data: bytes, *, compress: bool = True) -> tuple[Hash, DataBlock]:
        """Hash and (unless ``compress`` is false) compress ``data`` in a worker thread."""
        self._check_size(data)
        level = self._ctx.config.compression_level if compress else None
        return await run_blocking(hash_and_encode, data, level, limiter=self._ctx.cpu_limiter)

    async def put_block(self, data: bytes, *, compress: bool = True) -> Hash:
        hash, block = await self.encode(data, compress=compress)
        await self.put_encoded(hash, block)
        return hash

    async def rpc_put_block(self, hash: bytes, data: bytes, *, compress: bool = True) -> None:
        expected = as_hash(hash)
        actual, block = await self.encode(data, compress=compress)
        if actual != expected:
            raise ValueError(f"data hashes to {actual.hex()}, not {expected.hex()}")
        await self.put_encoded(expected, block)

    async def write_local(self, hash: Hash, block: DataBlock) -> WriteOutcome:
        """Write ``block`` durably into this node's data directories (takes its lock)."""
        ctx = self._local
        if ctx is None:
            raise TrioblockError(f"{self._ctx.node_id} is a gateway: it stores no blocks")
        started = trio.current_time()
        outcome = await ctx.store.write_block(hash, block, ctx.clock.now_msec())
        ctx.metrics.write_duration.observe(trio.current_time() - started)
        if outcome is not WriteOutcome.KEPT:
            ctx.metrics.bytes_written += len(block)
        return outcome

    async def put_encoded(self, hash: Hash, block: DataBlock) -> None:
        ctx = self._ctx
        ctx.require_open()
        ctx.metrics.puts += 1
        targets = ctx.layout.storage_nodes(hash)
        if targets == [ctx.node_id]:
            await self.write_local(hash, block)
            return
        await self._replicate(hash, block, targets, ctx.layout.write_quorum)

    async def send_one(self, node: str, hash: Hash, block: DataBlock, background: bool) -> None:
        """Store ``block`` on ``node`` (this node: a local write), within ``rpc_timeout``."""
        ctx = self._ctx
        if node == ctx.node_id:
            await self.write_local(hash, block)
            return
        if ctx.rpc is None:
            raise TransportError(f"no transport configured to reach node {node}")
        with trio.fail_after(ctx.config.rpc_timeout):
            await ctx.rpc.put_block(node, hash, block, background=background)

    async def _replicate(
        self, hash: Hash, block: DataBlock, targets: list[str], quorum: int
    ) -> None:
        """Send to every target at once; return at quorum, let the rest finish in the node."""
        ctx = self._ctx
        nursery = ctx.require_open()
        # One bytes object goes to every peer: it is counted once, for as long as any
        # send holds it.
        taken = await ctx.budget.acquire(len(block))
        await call_quorum(
            nursery,
            targets,
            quorum,
            lambda node: self.send_one(node, hash, block, background=False),
            what=f"block {hash.hex()}",
            on_all_done=lambda: ctx.budget.release(taken),
        )


__all__ = ["Writer"]
