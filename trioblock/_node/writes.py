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
from ..errors import QuorumError, TransportError
from .context import NodeContext, as_hash

log = logging.getLogger("trioblock.node")


class Writer:
    """Local durable writes and quorum puts of one node."""

    def __init__(self, ctx: NodeContext) -> None:
        self._ctx = ctx

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
        ctx = self._ctx
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
        taken = await ctx.budget.acquire(len(block) * max(1, len(targets) - 1))
        done = trio.Event()
        successes = 0
        failures: dict[str, BaseException] = {}
        pending = len(targets)

        async def send(node: str) -> None:
            nonlocal successes, pending
            try:
                await self.send_one(node, hash, block, background=False)
            except Exception as exc:  # recorded per node in the QuorumError
                failures[node] = exc
                log.debug("put %s to %s failed: %r", hash.short(), node, exc)
            else:
                successes += 1
            finally:
                pending -= 1
                if successes >= quorum or successes + pending < quorum:
                    done.set()
                if pending == 0:
                    ctx.budget.release(taken)

        for node in targets:
            nursery.start_soon(send, node)
        await done.wait()
        if successes < quorum:
            raise QuorumError(
                f"block {hash.hex()} could not be written to a quorum",
                quorum=quorum,
                successes=successes,
                errors=failures,
            )


__all__ = ["Writer"]
