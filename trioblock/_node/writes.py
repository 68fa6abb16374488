"""Writes and replication: how a put reaches its storage nodes.

How a put travels: take room in the byte budget (``ram_buffer_max``) for the largest
encoding of the data → hash and compress once in a worker thread (``hash_and_encode``) →
for every storage node of the hash (just this one on the embedded default) write locally
(``BlockStore.write_block``, under the block's lock, in one worker-thread trip with the
other writes waiting at the same moment) or send a ``PutBlock``
(``RpcNode.put_block``: puts to one peer queued at the same moment travel together as a
``PutBlocks``) → return once ``write_quorum`` nodes acknowledged a durable
write, while the remaining sends finish in the node's nursery; the budget is given back
when the last send has finished. A block in flight is counted once, however many peers
it goes to.

On a storage node with a built-in placement (whose answers are pure functions of the
hash, safe to compute in a worker thread), the local write happens in the same worker
trip as the hashing when this node is one of the block's storage nodes and nobody holds
or waits for the block's lock: the thread claims the lock itself
(``BlockStore.try_write_sync``). One trip instead of two: at 4 KiB each trip's wait for
a worker and for the interpreter lock is a large part of a put's latency. When the
block is busy, the write takes the lock on the Trio thread as before.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

import outcome
import trio

from .._core.block import DataBlock, hash_and_encode, max_encoded_size
from .._core.dirhealth import NO_SPACE
from .._core.hashing import Hash
from .._core.layoutversion import LayoutVersion
from .._core.placement import LocalLayout, StaticLayout
from .._storage import BlockStore, WriteOutcome, run_blocking, write_blocks
from ..errors import (
    DiskError,
    DiskFullError,
    QuorumError,
    StaleLayoutError,
    TransportError,
    TrioblockError,
)
from .context import NodeContext, PeerContext, as_hash
from .quorum import call_quorum
from .writes_batch import BatchPuts

log = logging.getLogger("trioblock.node")


class Writer:
    """Local durable writes and quorum puts of one node."""

    def __init__(
        self, ctx: PeerContext, on_stale: Callable[[str], Awaitable[None]] | None = None
    ) -> None:
        self._ctx = ctx
        #: called with a peer that answered StaleLayoutError (the layouts are exchanged)
        self._on_stale = on_stale
        #: this node's storage (None on a gateway, which never writes locally)
        self._local = ctx.local
        self._batch = BatchPuts(ctx, self)

    def check_block(self, data: object) -> None:
        """``TypeError`` unless ``data`` is bytes-like, ``ValueError`` when too large."""
        if isinstance(data, str):
            raise TypeError("a block is bytes, not str: encode the text first (e.g. text.encode())")
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(
                f"a block is bytes (or a bytearray or memoryview), not {type(data).__name__}"
            )
        limit = self._ctx.config.max_block_size
        if len(data) > limit:
            raise ValueError(f"block of {len(data)} bytes exceeds max_block_size ({limit})")

    async def put_block(self, data: bytes, *, compress: bool = True) -> Hash:
        return await self._put(data, None, compress)

    async def rpc_put_block(self, hash: bytes, data: bytes, *, compress: bool = True) -> None:
        await self._put(data, as_hash(hash), compress)

    async def put_blocks(self, datas: object, *, compress: bool = True) -> list[Hash]:
        """Store many blocks at once (``writes_batch``); their hashes, in order."""
        return await self._batch.put_blocks(datas, compress)

    async def exchange_layouts(self, node: str) -> bool:
        """After ``node`` answered ``StaleLayoutError``: exchange layouts with it; False
        when this node does not (or the exchange failed)."""
        if self._on_stale is None:
            return False
        try:
            await self._on_stale(node)
        except TrioblockError as exc:
            log.debug("layout exchange with %s failed: %r", node, exc)
            return False
        return True

    async def _put(self, data: bytes, expected: Hash | None, compress: bool) -> Hash:
        """Encode and store ``data`` within the byte budget, taken before encoding.

        The budget covers the block from its encoding until the last copy is sent: the
        largest encoding of ``data`` is taken first, trimmed to the encoded size once it
        is known, and released when every send has finished (counted once: one bytes
        object goes to every peer).
        """
        ctx = self._ctx
        self.check_block(data)
        ctx.require_open()
        level = ctx.config.compression_level if compress else None
        bound = len(data) if level is None else max_encoded_size(len(data))
        taken = await ctx.budget.acquire(bound)
        try:
            local = self._local
            written: WriteOutcome | None = None
            if local is not None and isinstance(
                ctx.layout, StaticLayout | LocalLayout | LayoutVersion
            ):
                hash, block, written, seconds = await run_blocking(
                    _encode_and_write,
                    local.store,
                    data,
                    level,
                    _WriteHere(ctx.node_id, ctx.layout, expected),
                    ctx.clock.now_msec(),
                    trio.lowlevel.current_trio_token(),
                    limiter=local.store.limiter,
                )
                if written is not None:
                    self._written(written, len(block), seconds)
            else:
                hash, block = await run_blocking(
                    hash_and_encode, data, level, limiter=ctx.cpu_limiter
                )
            if expected is not None and hash != expected:
                raise ValueError(f"data hashes to {hash.hex()}, not {expected.hex()}")
            if taken > len(block):
                ctx.budget.release(taken - len(block))
                taken = len(block)
            # From here the budget belongs to the put: it releases it when all is sent.
            held, taken = taken, 0
            await self.put_encoded(hash, block, budget_held=held, written_here=written is not None)
            return hash
        finally:
            if taken:
                ctx.budget.release(taken)

    def _written(self, outcome: WriteOutcome, size: int, seconds: float) -> None:
        ctx = self._ctx
        ctx.metrics.write_duration.observe(seconds)
        if outcome is not WriteOutcome.KEPT:
            ctx.metrics.bytes_written += size

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
        try:
            if verify:
                outcome = await ctx.store.write_verified_block(hash, block, ctx.clock.now_msec())
            else:
                outcome = await ctx.store.write_block(hash, block, ctx.clock.now_msec())
        except OSError as exc:
            raise _disk_error(ctx, hash, exc) from exc
        finally:
            self._ctx.metrics.write_trips = ctx.store.writes.trips_run
        self._written(outcome, len(block), trio.current_time() - started)
        return outcome

    async def write_local_many(
        self, items: list[tuple[Hash, DataBlock]]
    ) -> list[BaseException | None]:
        """Write distinct blocks (this node's own encodings) durably here, together
        (their locks, then one group of the grouped writes); each block's error (a
        ``DiskError`` for a failed write) or None, in order."""
        ctx = self._local
        if ctx is None:
            raise TrioblockError(f"{self._ctx.node_id} is a gateway: it stores no blocks")
        started = trio.current_time()
        try:
            results = await write_blocks(ctx.store, items, ctx.clock.now_msec())
        finally:
            self._ctx.metrics.write_trips = ctx.store.writes.trips_run
        seconds = trio.current_time() - started
        errors: list[BaseException | None] = []
        for (hash, block), result in zip(items, results, strict=True):
            if isinstance(result, outcome.Value):
                self._written(result.value, len(block), seconds)
                errors.append(None)
            elif isinstance(result, outcome.Error) and isinstance(result.error, OSError):
                errors.append(_disk_error(ctx, hash, result.error))
            else:
                assert isinstance(result, outcome.Error)
                errors.append(result.error)
        return errors

    async def put_encoded(
        self, hash: Hash, block: DataBlock, *, budget_held: int = 0, written_here: bool = False
    ) -> None:
        """Store an encoded, verified block on its storage nodes (quorum).

        ``budget_held``: bytes of the byte budget the caller took for this block; they
        are released once every copy is sent (or at once, on a failure before that).
        ``written_here``: the caller already wrote it durably on this node.
        """
        ctx = self._ctx
        release = budget_held
        try:
            ctx.require_open()
            ctx.metrics.puts += 1
            targets = ctx.layout.storage_nodes(hash)
            if targets == [ctx.node_id]:
                if not written_here:
                    await self.write_local(hash, block)
                return
            if not release:
                release = await ctx.budget.acquire(len(block))
            held, release = release, 0
            await self._replicate(hash, block, targets, ctx.layout.write_quorum, held, written_here)
        finally:
            if release:
                ctx.budget.release(release)

    async def send_one(
        self, node: str, hash: Hash, block: DataBlock, background: bool, written: bool = False
    ) -> None:
        """Store ``block`` on ``node`` (this node: a local write, unless ``written``
        already), within ``rpc_timeout``."""
        ctx = self._ctx
        if node == ctx.node_id:
            if not written:
                await self.write_local(hash, block)
            return
        if ctx.rpc is None:
            raise TransportError(f"no transport configured to reach node {node}")
        with trio.fail_after(ctx.config.rpc_timeout):
            try:
                await ctx.rpc.put_block(node, hash, block, background=background)
            except StaleLayoutError:
                if self._on_stale is None:
                    raise
                # One of us has an older layout: exchange, then, if the node is still
                # to hold the block, send it once more.
                await self._on_stale(node)
                if node not in ctx.layout.storage_nodes(hash):
                    raise
                await ctx.rpc.put_block(node, hash, block, background=background)

    async def _replicate(
        self,
        hash: Hash,
        block: DataBlock,
        targets: list[str],
        quorum: int,
        held: int,
        written_here: bool,
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
            lambda node: self.send_one(node, hash, block, False, written_here),
            what=f"block {hash.hex()}",
            on_all_done=lambda: ctx.budget.release(held),
        )


def _disk_error(ctx: NodeContext, hash: bytes, exc: OSError) -> DiskError:
    """The ``DiskError`` (``DiskFullError`` for ENOSPC or EDQUOT) for a failed local write."""
    if isinstance(exc, DiskError):  # the store names the directory that failed
        directory, full = exc.directory, isinstance(exc, DiskFullError)
    else:
        directory, full = str(ctx.store.layout.primary_dir(hash)), False
    kind = DiskFullError if full or exc.errno in NO_SPACE else DiskError
    return kind(
        directory,
        exc.errno,
        f"{ctx.node_id}: cannot store block {bytes(hash).hex()} in {directory}: "
        f"{exc.strerror or exc}",
    )


class _WriteHere:
    """In a worker thread: whether a freshly hashed block is to be written on this node
    (one of its storage nodes, and the hash the caller expected if it gave one).

    Only for the built-in placements, whose answers are pure functions of the hash.
    """

    def __init__(
        self,
        node_id: str,
        layout: StaticLayout | LocalLayout | LayoutVersion,
        expected: Hash | None,
    ):
        self._node_id = node_id
        self._layout = layout
        self._expected = expected

    def __call__(self, hash: Hash) -> bool:
        if self._expected is not None and hash != self._expected:
            return False
        return self._node_id in self._layout.storage_nodes(hash)


def _encode_and_write(
    store: BlockStore,
    data: bytes,
    level: int | None,
    write_here: _WriteHere,
    written_at_msec: int,
    token: trio.lowlevel.TrioToken,
) -> tuple[Hash, DataBlock, WriteOutcome | None, float]:
    """Hash and encode ``data``; write it here too when it belongs here and its lock is
    free (None for the outcome when it was not written), and how long the write took.
    Runs in a worker thread."""
    hash, block = hash_and_encode(data, level)
    if not write_here(hash):
        return hash, block, None, 0.0
    started = time.perf_counter()
    try:
        outcome = store.try_write_sync(hash, block, written_at_msec, token)
    except OSError:
        # Not written here: the put goes the usual way, where this node's write is
        # one of the quorum's (and its failure that node's part only).
        return hash, block, None, 0.0
    return hash, block, outcome, time.perf_counter() - started


__all__ = ["Writer"]
