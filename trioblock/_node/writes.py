"""Writes and replication: how a put reaches its storage nodes.

How a put travels: take room in the byte budget (``ram_buffer_max``) for the largest
encoding of the data → hash and compress once in a worker thread (``hash_and_encode``) →
for every storage node of the hash (just this one on the embedded default) write locally
(``BlockStore.write_block``, under the block's lock) or send a ``PutBlock``
(``RpcNode.put_block``) → return once ``write_quorum`` nodes acknowledged a durable
write, while the remaining sends finish in the node's nursery; the budget is given back
when the last send has finished. A block in flight is counted once, however many peers
it goes to.
"""

from __future__ import annotations

import logging

import trio

from .._core.block import DataBlock, hash_and_encode, max_encoded_size
from .._core.hashing import Hash
from .._storage.blockfiles import WriteOutcome
from .._storage.offload import run_blocking
from ..errors import QuorumError, TransportError, TrioblockError
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
        return await self._put(data, None, compress)

    async def rpc_put_block(self, hash: bytes, data: bytes, *, compress: bool = True) -> None:
        await self._put(data, as_hash(hash), compress)

    async def _put(self, data: bytes, expected: Hash | None, compress: bool) -> Hash:
        """Encode and store ``data`` within the byte budget, taken before encoding.

        The budget covers the block from its encoding until the last copy is sent: the
        largest encoding of ``data`` is taken first, trimmed to the encoded size once it
        is known, and released when every send has finished (counted once: one bytes
        object goes to every peer).
        """
        ctx = self._ctx
        self._check_size(data)
        ctx.require_open()
        level = ctx.config.compression_level if compress else None
        bound = len(data) if level is None else max_encoded_size(len(data))
        taken = await ctx.budget.acquire(bound)
        try:
            hash, block = await run_blocking(hash_and_encode, data, level, limiter=ctx.cpu_limiter)
            if expected is not None and hash != expected:
                raise ValueError(f"data hashes to {hash.hex()}, not {expected.hex()}")
            if taken > len(block):
                ctx.budget.release(taken - len(block))
                taken = len(block)
            # From here the budget belongs to the put: it releases it when all is sent.
            held, taken = taken, 0
            await self.put_encoded(hash, block, budget_held=held)
            return hash
        finally:
            if taken:
                ctx.budget.release(taken)

    async def write_local(
        self, hash: Hash, block: DataBlock, *, verify: bool = False
    ) -> WriteOutcome:
        """Write ``block`` durably into this node's data directories (takes its lock).

        With ``verify`` (a block from a peer), it is first checked against ``hash`` in
        the same worker-thread trip; ``CorruptBlockError`` and nothing written if it fails.
        """
        ctx = self._local
        if ctx is None:
            raise TrioblockError(f"{self._ctx.node_id} is a gateway: it stores no blocks")
        started = trio.current_time()
        if verify:
            outcome = await ctx.store.write_verified_block(hash, block, ctx.clock.now_msec())
        else:
            outcome = await ctx.store.write_block(hash, block, ctx.clock.now_msec())
        ctx.metrics.write_duration.observe(trio.current_time() - started)
        if outcome is not WriteOutcome.KEPT:
            ctx.metrics.bytes_written += len(block)
        return outcome

    async def put_encoded(self, hash: Hash, block: DataBlock, *, budget_held: int = 0) -> None:
        """Store an encoded, verified block on its storage nodes (quorum).

        ``budget_held``: bytes of the byte budget the caller took for this block; they
        are released once every copy is sent (or at once, on a failure before that).
        """
        ctx = self._ctx
        release = budget_held
        try:
            ctx.require_open()
            ctx.metrics.puts += 1
            targets = ctx.layout.storage_nodes(hash)
            if targets == [ctx.node_id]:
                await self.write_local(hash, block)
                return
            if not release:
                release = await ctx.budget.acquire(len(block))
            held, release = release, 0
            await self._replicate(hash, block, targets, ctx.layout.write_quorum, held)
        finally:
            if release:
                ctx.budget.release(release)

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
        self, hash: Hash, block: DataBlock, targets: list[str], quorum: int, held: int
    ) -> None:
        """Send to every target at once; return at quorum, let the rest finish in the node.

        ``held`` bytes of the budget are released once every send has finished.
        """
        ctx = self._ctx
        try:
            nursery = ctx.require_open()
            if not targets:
                raise QuorumError(
                    f"block {hash.hex()}: no node to send to", quorum=quorum, successes=0, errors={}
                )
        except BaseException:
            ctx.budget.release(held)
            raise
        await call_quorum(
            nursery,
            targets,
            quorum,
            lambda node: self.send_one(node, hash, block, background=False),
            what=f"block {hash.hex()}",
            on_all_done=lambda: ctx.budget.release(held),
        )


__all__ = ["Writer"]
