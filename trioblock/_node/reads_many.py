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
   it), and every block of a failed exchange (a node down, a timeout), is then asked of
   the next node of its read order, grouped again by node, until a node gives a valid
   copy or every node failed it. Unlike ``get_block``, a slow node is not hedged: its
   blocks wait for its answer (or the request timeout) before the next node is asked.

The answer is all the blocks, or an error: the first block (in the order asked) that
no node gave raises as ``get_block`` would. Memory: the answer holds every block asked,
and at most one reply per node is under way besides; the caller bounds it by how many
hashes it asks at once. Cancelling leaves nothing half-done: reads change nothing, and a
read repair started runs in the node's background as ``get_block``'s does.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import trio

from .._core.block import DataBlock, decode_block
from .._core.hashing import Hash
from .._net.rpc import MAX_GET_BLOCKS_BYTES
from .._storage import read_verified_many, run_blocking
from ..errors import CorruptBlockError, MissingBlockError, TrioblockError
from .context import PeerContext
from .reads import Reader, after_local_failure, not_found

__all__ = ["get_many"]

log = logging.getLogger("trioblock.node")


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
        #: the nodes that failed each block, and how
        self.tried: dict[Hash, dict[str, BaseException]] = {}

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

    def failed(self, hash: Hash, exc: TrioblockError) -> None:
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
        # What this node did not give goes to the next node of each block's read order,
        # batched again; a block every node failed fails with all their causes.
        regroup: dict[str, list[Hash]] = {}
        for hash, failure in failures.items():
            tried = self.tried.setdefault(hash, {})
            tried[node] = failure
            after = next((n for n in ctx.peers_for_read(hash) if n not in tried), None)
            if after is None:
                self.failed(hash, not_found(hash, tried))
            else:
                regroup.setdefault(after, []).append(hash)
        for after, hashes in regroup.items():
            nursery.start_soon(self._ask, nursery, after, hashes)


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
