"""The block manager: one node's public face.

:class:`BlockManager` is a facade: each member checks that the node is open and hands
the work to the collaborator that does that one job —

- ``writes.Writer``: puts, local durable writes, quorum replication;
- ``reads.Reader``: local reads, hedged peer reads, read repair, streaming (batched
  gets in ``reads_many``);
- ``refcounts.RefCounts``: reference counts, transactions, the resync queue as seen by
  users and operators, purge;
- ``resync.ResyncPool`` / ``resync.ResyncWorker`` / ``resync_exec.ResyncExecutor``: the
  resync workers, their settings and what they do;
- ``refsync.RefSyncWorker``: reference anti-entropy (and a pass on demand);
- ``endpoint.RpcEndpoint``: the answers to peers (and to operators, through the admin
  handler given to ``open_block_manager``);
- ``operations.Operations``: scrub, repair, rebalance.

The members live in rooms by job: blocks and node state here, the cluster layout in
``manager_layout``, references in ``manager_refs``, resync and operations in
``manager_upkeep``, over ``manager_base`` (the one open check, ``_open``, and the
storage check, ``_local``). Whether the node stores anything is decided when it is
built (``StorageParts`` or None; ``PeerContext.local``).

They share a ``context.NodeContext``. ``open_block_manager`` owns the node's nursery:
inside it run the RPC server (when a transport is given), the resync workers and the
scrub worker; leaving the context stops them between units and closes the database.
After that every member raises :class:`~trioblock.errors.NodeClosedError`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

from .._core.config import Config
from .._core.datalayout import DataLayout
from .._core.dirhealth import DataDirState
from .._core.hashing import Hash
from .._net.rpc import AdminResult, RpcStats
from .._storage import StoredBlocks
from .appcalls import AppCalls
from .background.workers import WorkerInfo
from .context import PeerContext, as_hash
from .diskusage import DataDirUsage, clear_data_dir, data_dir_usage
from .manager_base import ManagerBase, StorageParts
from .manager_layout import LayoutMembers
from .manager_ops import OperatorMembers
from .manager_refs import ReferenceMembers
from .manager_upkeep import UpkeepMembers
from .membership import Membership
from .metrics import Metrics
from .reads import Reader
from .reads_many import get_many
from .refupdates import References
from .writes import Writer

log = logging.getLogger("trioblock.node")

#: What ``open_block_manager(admin_handler=...)`` takes: answers one operator request.
AdminHandler = Callable[["BlockManager", dict[str, Any], "bytes | None"], Awaitable[AdminResult]]


class BlockManager(LayoutMembers, ReferenceMembers, UpkeepMembers, OperatorMembers, ManagerBase):
    """One trioblock node. Create it with :func:`open_block_manager`.

    Besides the members below: ``config``, ``node_id``, ``layout`` (the cluster layout)
    and ``metrics`` (counters and durations since the node opened).
    """

    def __init__(
        self,
        ctx: PeerContext,
        *,
        writer: Writer,
        reader: Reader,
        references: References,
        storage: StorageParts | None,
        membership: Membership,
    ) -> None:
        """Built by :func:`open_block_manager`; not meant to be called directly."""
        self._ctx = ctx
        self.config: Config = ctx.config
        self.node_id: str = ctx.node_id
        self.metrics: Metrics = ctx.metrics
        self._membership = membership
        self._opened_monotonic = time.monotonic()
        self._writer = writer
        self._reader = reader
        self._references = references
        self._app = AppCalls(ctx, references)
        self._storage = storage

    @property
    def is_gateway(self) -> bool:
        """True when this node stores nothing (no data directory, no database): it puts,
        gets, streams and references through the cluster's storage nodes."""
        return self._storage is None

    def __repr__(self) -> str:
        return f"<BlockManager {self.node_id}{' (closed)' if self._ctx.closed else ''}>"

    # -- blocks ---------------------------------------------------------------------------

    async def put_block(self, data: bytes, *, compress: bool = True) -> Hash:
        """Store ``data`` on its storage nodes; return its hash once a write quorum holds it.

        Raises ``QuorumError`` (with each failed node's cause) when fewer than
        ``write_quorum`` nodes acknowledged a durable write.
        """
        self._open()
        return await self._writer.put_block(data, compress=compress)

    async def put_blocks(self, blocks: Iterable[bytes], *, compress: bool = True) -> list[Hash]:
        """Store many blocks at once; return their hashes, in order, once every block is
        held by a write quorum of its storage nodes (as :meth:`put_block` for each).

        The whole batch is hashed and compressed in one worker-thread trip, and each
        storage node gets its blocks in a few ``PutBlocks`` requests (16 blocks or
        4 MiB a request) instead of one request per block; an embedded node writes its
        blocks in one group (one fsync per directory touched). A block given twice is
        stored once. Copies beyond the quorum finish in the background, as for
        :meth:`put_block`.

        Memory: the blocks passed (plus their encodings) are held until the call
        returns: bound it by how many blocks you pass (a few MiB a call, e.g. the
        missing blocks of one batch of 64 chunks). A batch takes room in the node's
        byte budget (``ram_buffer_max``) for its encodings while it is sent.

        ``TypeError`` (naming the block) when ``blocks`` is not an iterable of bytes
        (a single ``bytes`` is refused: use :meth:`put_block`), ``ValueError`` for a
        block over ``max_block_size``; nothing is stored then. ``PutBatchError`` when
        some blocks did not reach their quorum: its ``failed`` maps each one's index
        (in ``blocks``) to its ``QuorumError`` (with each node's cause), ``succeeded``
        lists the hashes stored; putting the failed blocks again is harmless.

        Example::

            hashes = await bm.put_blocks([chunks[h] for h in missing])
        """
        self._open()
        return await self._writer.put_blocks(blocks, compress=compress)

    async def rpc_put_block(self, hash: bytes, data: bytes, *, compress: bool = True) -> None:
        """Like :meth:`put_block` with the hash given; ``ValueError`` if it does not match."""
        self._open()
        await self._writer.rpc_put_block(hash, data, compress=compress)

    async def get_block(self, hash: bytes) -> bytes:
        """The block's plaintext, verified: local copy first, then peers (hedged).

        Raises ``MissingBlockError`` when no node returns a valid copy, or
        ``CorruptBlockError`` when the only copies found were corrupt. A storage node
        that should have held the block keeps the copy it received (read repair).
        """
        h = as_hash(hash)
        self._open()
        return await self._reader.get_block(h)

    async def get_blocks(self, hashes: Iterable[bytes]) -> list[bytes]:
        """The plaintext of each block of ``hashes``, verified, in the order asked (a
        hash asked twice is answered twice): :meth:`get_block` for many blocks, in few
        exchanges.

        Local copies are read and verified in a few worker-thread trips; the others are
        asked of the first node of their read order, one batched request per node (all
        nodes at once), each reply verified in one trip; the blocks a node lacks, fails
        or serves corrupt (reported to it) are asked of their next node, batched. The
        same guarantees per block as :meth:`get_block`, read repair included: raises
        the error of the first block (in the order asked) that no node gave valid,
        ``MissingBlockError`` or ``CorruptBlockError``; nothing is returned then.
        Unlike :meth:`get_block`, a slow node is not hedged with a second request: its
        blocks wait for its answer (within ``rpc_timeout``) before the next node is asked.

        Memory: every block asked is held until the call returns; bound it by how many
        hashes you ask at once (say 64 blocks or a few MiB per call, a couple of calls
        under way). Any number is accepted and split into requests of at most 64
        blocks and 4 MiB. Cancelling leaves nothing half-done (reads change nothing).
        """
        hs = [as_hash(h) for h in hashes]
        self._open()
        return await get_many(self._reader, self._ctx, hs)

    def stream_block(self, hash: bytes) -> AbstractAsyncContextManager[AsyncIterator[bytes]]:
        """Stream the block's plaintext in chunks, verifying as it goes.

        An async context manager (not a coroutine, not an iterator): enter it with
        ``async with``, then iterate over what it gives with ``async for``::

            async with bm.stream_block(h) as chunks:
                async for chunk in chunks:
                    out.write(chunk)

        The last chunk is held back until the whole block has been verified, so a corrupt
        block raises ``CorruptBlockError`` before the consumer has seen all of it. The
        local copy is tried first, then peers in read order: a source that fails before
        the consumer received anything (missing, quarantined meanwhile, corrupt,
        unreachable) is replaced by the next one; a storage node that should have held
        the block fetches it back in the background (read repair).
        ``MissingBlockError`` on entering when no source has the block.

        A block streamed from a peer holds one of the node's connections to that peer
        until the ``async with`` block ends: at most 64 are open to one peer at once,
        shared with every other request to it, and more requests wait for one. Read
        the stream promptly and leave the block; do not keep many streams from one
        peer open while waiting on something else.
        """
        h = as_hash(hash)
        self._open()
        return self._reader.stream_block(h)

    async def has_local_block(self, hash: bytes) -> bool:
        """Whether a copy of the block exists in this node's data directories."""
        h = as_hash(hash)
        self._open()
        if self._storage is None:
            return False
        return await self._storage.ctx.store.exists(h)

    async def local_block_path(self, hash: bytes) -> Path | None:
        """Where this node's copy of the block is (the one a read would use), or None."""
        h = as_hash(hash)
        self._open()
        return await self._reader.local_block_path(h)

    # -- node state -----------------------------------------------------------------------------

    def workers(self) -> list[WorkerInfo]:
        """Name, state, queue length, errors, tranquility and progress of each worker."""
        self._open()
        return [] if self._storage is None else self._storage.workers.infos()

    def now_msec(self) -> int:
        """The node clock: wall-clock msec at start-up plus Trio's clock since then.

        Every time the node reports or persists is on this clock.
        """
        return self._ctx.clock.now_msec()

    def uptime(self) -> float:
        """Seconds (real time) since the node opened."""
        return time.monotonic() - self._opened_monotonic

    @property
    def data_layout(self) -> DataLayout:
        """The data directories and the assignment of partitions to them."""
        return self._local().ctx.store.layout

    async def data_dir_usage(self) -> list[DataDirUsage]:
        """Size, free space and health (ok / full / failing) of each data directory."""
        ctx = self._local().ctx
        return await data_dir_usage(ctx.store, ctx.cpu_limiter)

    def clear_data_dir(self, path: str | Path) -> DataDirState:
        """Mark the data directory ``path`` ok again (an operator's word that its disk
        works): new blocks go there again, its errors are forgotten. Returns the state
        it had. ``ValueError`` if ``path`` is not one of this node's data directories."""
        return clear_data_dir(self._local().ctx.store, path)

    def stored(self) -> StoredBlocks:
        """How many block copies this node's data directories hold, and their bytes.

        Constant time: the figures are kept as copies are written, replaced, quarantined,
        deleted, purged or moved. They are **exact** (``exact=True``) once the count the
        node starts in the background when it opens (after its sweep of stale temp
        files) has gone through every data directory, and stay exact from then on.
        Until then (``exact=False``) they are an **estimate**: the changes since the node
        opened plus the part of the directories counted so far. ``exact`` also stays
        False when a directory could not be read; a restart counts again. Files changed
        behind the node's back (by hand) are seen at the next start.
        """
        self._open()
        if self._storage is None:
            return StoredBlocks(0, 0, True)
        return self._storage.ctx.store.stored.figures()

    def buffer_in_use(self) -> int:
        """Bytes of block data held in memory for peers now (at most ``ram_buffer_max``)."""
        return self._ctx.budget.in_use

    def rpc_stats(self) -> RpcStats | None:
        """Connection and request counters of the RPC layer (None without a transport)."""
        rpc = self._ctx.rpc
        return None if rpc is None else rpc.stats


__all__ = ["AdminHandler", "BlockManager", "StorageParts"]
