"""Batched gets: many blocks in few exchanges and few worker-thread trips.

``BlockManager.get_blocks`` gives the same guarantees per block as ``get_block`` (see
``reads``): every block verified against its hash, a corrupt copy reported to the node
that served it, ``MissingBlockError`` / ``CorruptBlockError`` when no node gives a valid
copy, read repair where this node should have held the block. How it travels:

1. The hashes asked are deduplicated (the answer keeps the order and repeats asked).
2. A storage node reads and verifies its local copies in worker-thread trips of up to
   ``MAX_GET_BLOCKS_BYTES`` each (``read_verified_many``); a corrupt copy is
   quarantined and queued for resync, an unreadable one queued too, as ``get_block``
   does.
3. The rest are grouped by the first node of their read order: one ``GetBlocks``
   exchange per node (``RpcClient.get_blocks``: up to 64 hashes and 4 MiB per reply,
   the rest asked again), the nodes asked at once. Each reply is decoded and verified
   in ONE worker-thread trip.
4. A block that node lacked, answered with an error, or served corrupt (reported to
   it), and every block of a failed exchange, is then asked of the next nodes of its
   read order singly (``Reader.read_from_peers``, hedged), at most
   :data:`FALLBACK_AT_ONCE` at a time.

The answer is all the blocks, or an error: the first block (in the order asked) that
no node gave raises as ``get_block`` would. Memory: the answer holds every block asked,
and at most one reply per node is under way besides; the caller bounds it by how many
hashes it asks at once. Cancelling leaves nothing half-done: reads change nothing, and a
read repair started runs in the node's background as ``get_block``'s does.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Final

import trio

from .._core.block import DataBlock, decode_block
from .._core.hashing import Hash
from .._net.rpc import MAX_GET_BLOCKS_BYTES
from .._storage import read_verified_many, run_blocking
from ..errors import BlockError, CorruptBlockError, MissingBlockError
from .context import PeerContext
from .reads import Reader, after_local_failure, not_found

__all__ = ["FALLBACK_AT_ONCE", "get_many"]

log = logging.getLogger("trioblock.node")

#: Blocks asked of their next nodes at once, singly, after their first node failed them.
FALLBACK_AT_ONCE: Final = 16


def _decode_all(
    hashes: list[Hash], blocks: list[DataBlock | None], max_size: int
) -> list[bytes | CorruptBlockError | None]:
    """Each block decoded and verified against its hash (None where there is none)."""
    out: list[bytes | CorruptBlockError | None] = []
    for hash, block in zip(hashes, blocks, strict=True):
        if block is None:
            out.append(None)
            continue
        try:
            out.append(decode_block(hash, block, max_size=max_size))
        except CorruptBlockError as exc:
            out.append(exc)
    return out


class _Batch:
    """One ``get_blocks`` call: what was found, what failed and where."""

    def __init__(self, reader: Reader, ctx: PeerContext) -> None:
        self.reader = reader
        self.ctx = ctx
        self.plain: dict[Hash, bytes] = {}
        self.errors: dict[Hash, BaseException] = {}
        #: how the local copy failed (corrupt, unreadable), for the error raised
        self.local: dict[Hash, BaseException] = {}
        self.fallback = trio.CapacityLimiter(FALLBACK_AT_ONCE)

    async def read_local(self, hashes: list[Hash]) -> None:
        local = self.ctx.local
        if local is None:
            return
        rest = hashes
        while rest:
            started = trio.current_time()
            found = await read_verified_many(local.store, rest, MAX_GET_BLOCKS_BYTES)
            local.metrics.read_duration.observe(trio.current_time() - started)
            for hash, outcome in zip(rest, found, strict=False):
                if isinstance(outcome, CorruptBlockError):
                    self.local[hash] = outcome
                    await local.corrupt_copy_found(hash)  # (quarantined by the store)
                elif isinstance(outcome, OSError):
                    self.local[hash] = outcome
                    await self.reader.local_read_failed(hash, outcome)
                elif isinstance(outcome, BaseException):
                    raise outcome
                elif outcome is not None:
                    plaintext, block, _loc = outcome
                    local.metrics.bytes_read += len(block)
                    self.plain[hash] = plaintext
            rest = rest[len(found) :]

    async def read_remote(self, hashes: list[Hash]) -> None:
        groups: dict[str, list[Hash]] = {}
        for hash in hashes:
            peers = self.ctx.peers_for_read(hash)
            if not peers or self.ctx.rpc is None:
                self.failed(hash, MissingBlockError(hash))
            else:
                groups.setdefault(peers[0], []).append(hash)
        async with trio.open_nursery() as nursery:
            for node, group in groups.items():
                nursery.start_soon(self._ask, nursery, node, group)

    def failed(self, hash: Hash, exc: BlockError) -> None:
        self.errors[hash] = after_local_failure(hash, exc, self.local.get(hash))

    async def _ask(self, nursery: trio.Nursery, node: str, group: list[Hash]) -> None:
        """One node's batch; what it does not give is asked of the next nodes."""
        ctx = self.ctx
        assert ctx.rpc is not None
        failures: dict[Hash, BaseException] = {}
        try:
            got = await ctx.rpc.get_blocks(node, group)
        except Exception as exc:  # the whole exchange failed: every block's failure there
            log.debug("get of %d blocks from %s failed: %r", len(group), node, exc)
            failures = dict.fromkeys(group, exc)
        else:
            blocks = [b if isinstance(b, DataBlock) else None for b in got]
            verified = await run_blocking(
                _decode_all, group, blocks, ctx.config.max_block_size, limiter=ctx.cpu_limiter
            )
            for hash, outcome, block, plaintext in zip(group, got, blocks, verified, strict=True):
                if isinstance(plaintext, bytes):
                    assert block is not None
                    self.plain[hash] = plaintext
                    self.reader.repair_later(hash, block)
                elif isinstance(plaintext, CorruptBlockError):
                    ctx.metrics.corruptions += 1
                    self.reader.report_corrupt(node, hash)
                    failures[hash] = plaintext
                elif outcome is None:
                    failures[hash] = MissingBlockError(
                        hash, f"block {hash.hex()} missing on {node}"
                    )
                else:
                    assert isinstance(outcome, BaseException)
                    failures[hash] = outcome
        for hash, failure in failures.items():
            nursery.start_soon(self._ask_others, hash, node, failure)

    async def _ask_others(self, hash: Hash, first: str, exc: BaseException) -> None:
        peers = [n for n in self.ctx.peers_for_read(hash) if n != first]
        async with self.fallback:
            try:
                plaintext, block = await self.reader.read_from_peers(
                    hash, peers, failures={first: exc}
                )
            except (MissingBlockError, CorruptBlockError) as failure:
                self.failed(hash, failure)
                return
        self.plain[hash] = plaintext
        self.reader.repair_later(hash, block)


async def get_many(reader: Reader, ctx: PeerContext, hashes: Sequence[Hash]) -> list[bytes]:
    """The verified plaintext of each of ``hashes``, in order (see the module docstring)."""
    ctx.metrics.gets += len(hashes)
    batch = _Batch(reader, ctx)
    unique = list(dict.fromkeys(hashes))
    await batch.read_local(unique)
    rest = [h for h in unique if h not in batch.plain]
    if rest:
        await batch.read_remote(rest)
    out: list[bytes] = []
    for hash in hashes:
        plaintext = batch.plain.get(hash)
        if plaintext is None:
            error = batch.errors.get(hash) or not_found(hash, {})
            raise error
        out.append(plaintext)
    return out
