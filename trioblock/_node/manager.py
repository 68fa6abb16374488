"""The block manager: one node's public face, and ``open_block_manager``.

:class:`BlockManager` is a facade: each member checks that the node is open and hands
the work to the collaborator that does that one job —

- ``writes.Writer``: puts, local durable writes, quorum replication;
- ``reads.Reader``: local reads, hedged peer reads, read repair, streaming;
- ``refcounts.RefCounts``: reference counts, transactions, the resync queue as seen by
  users and operators, purge;
- ``resync.ResyncWorker`` / ``resync_exec.ResyncExecutor``: what the resync workers do;
- ``endpoint.RpcEndpoint``: the answers to peers (and to operators, through the admin
  handler given to ``open_block_manager``);
- ``operations.Operations``: scrub, repair, rebalance.

They share a ``context.NodeContext``. ``open_block_manager`` owns the node's nursery:
inside it run the RPC server (when a transport is given), the resync workers and the
scrub worker; leaving the context stops them between units and closes the database.
After that every member raises :class:`~trioblock.errors.NodeClosedError`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trio_util import move_on_when

from .._core.config import Config
from .._core.datalayout import DataLayout
from .._core.hashing import Hash
from .._core.layouthistory import VersionRecord
from .._core.layoutversion import NodeRole
from .._core.placement import Layout
from .._core.refcount import RcEntry
from .._core.refs import Reference
from .._net.rpc import AdminResult, RpcStats
from .._storage import ResyncErrorInfo, StoredBlocks, Transaction, run_blocking
from ..errors import GatewayError, NodeClosedError
from .appcalls import AppCalls
from .blockinfo import BlockInfo, cluster_block_info, local_block_info
from .context import NodeContext, PeerContext, as_hash
from .diskusage import DataDirUsage, disk_usage_sync
from .layoutstatus import LayoutStatus
from .membership import Membership
from .metasnap import MetadataSnapshots, SnapshotInfo
from .metrics import Metrics
from .operations import OperationName, Operations, OperationStatus
from .reads import Reader
from .rebalance import RebalanceReport
from .recount import RecountReport
from .refcounts import QueuedResync, RefCounts
from .references import References
from .refsync import RefSyncWorker, SyncReport
from .repair import RepairReport
from .resync import ResyncPool
from .scrubstate import ScrubStatus
from .stats import ClusterStats, NodeStats, cluster_stats, local_node_stats
from .workers import WorkerInfo, WorkerRegistry
from .writes import Writer

log = logging.getLogger("trioblock.node")


@dataclass(frozen=True, eq=False)
class StorageParts:
    """A storage node's collaborators (a gateway has none)."""

    ctx: NodeContext
    workers: WorkerRegistry
    refs: RefCounts
    resync: ResyncPool
    operations: Operations
    ref_sync: RefSyncWorker
    snapshots: MetadataSnapshots


#: What ``open_block_manager(admin_handler=...)`` takes: answers one operator request.
AdminHandler = Callable[["BlockManager", dict[str, Any], "bytes | None"], Awaitable[AdminResult]]


class BlockManager:
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

    # -- the cluster layout -------------------------------------------------------------------

    @property
    def layout(self) -> Layout:
        """The current cluster layout: a :class:`~trioblock.LayoutVersion` on a node with a
        layout history (opened with a ``StaticLayout`` or ``JoinCluster``), else the fixed
        layout it was opened with. Read it again after a change: it is replaced, never
        mutated."""
        return self._ctx.layout

    async def apply_layout(
        self,
        changes: Mapping[str, NodeRole | None],
        *,
        replication_factor: int | None = None,
        write_quorum: int | None = None,
    ) -> int:
        """Make the next layout version from the current one and return its number
        (async).

        ``changes`` maps node ids to their new :class:`~trioblock.NodeRole` (added or
        changed) or ``None`` (removed). The version is stored durably here, then sent to
        every node this one knows of; the others learn it from any peer too. Blocks and
        references then move to their new storage nodes in the background: watch
        :meth:`layout_status`. ``LayoutError`` (nothing stored) for an invalid change: an
        unknown node removed, a capacity of 0 or less, fewer storage nodes than the
        replication factor, a quorum out of range, or a fixed layout.

        Example::

            v = await bm.apply_layout(
                {"n3": trioblock.NodeRole(zone="dc2", capacity=2 * 2**40), "n1": None}
            )
        """
        self._open()
        return await self._membership.apply(changes, replication_factor, write_quorum)

    def layout_status(self) -> LayoutStatus:
        """Where the layout change stands, as this node knows it: the current version,
        the live ones, and each node's synced version, drained flag and what it has left
        to move (from its last report)."""
        self._open()
        return self._membership.status()

    def layout_history(self) -> list[VersionRecord]:
        """Every layout version this node has seen, oldest first: when it was applied,
        when it was retired (None while live), and whether another version with the same
        number superseded it."""
        self._open()
        return self._membership.records()

    async def forget_node(self, node_id: str) -> None:
        """Declare that ``node_id``, which no live layout version gives a role any more,
        is gone for good (its disk died), so that it counts as drained (async).

        A removed node reports itself drained once it holds nothing; a dead one never
        will, and would keep ``layout_status().settled`` false. Its references and
        copies had been written to a quorum of other nodes, which hold them. If it comes
        back after all, its own reports win again. ``LayoutError`` while it still has a
        role in a live version, or if the history does not know it.
        """
        self._open()
        await self._membership.forget(node_id)

    async def sync_layout(self) -> int:
        """Exchange layout histories with every known node now (async); the current
        version number afterwards."""
        self._open()
        await self._membership.spread_digests()
        return self._membership.status().version

    def _open(self) -> PeerContext:
        self._ctx.require_open()
        return self._ctx

    def _local(self) -> StorageParts:
        """The storage collaborators; a clear error on a gateway or a closed node."""
        self._ctx.require_open()
        if self._storage is None:
            raise GatewayError(self.node_id)
        return self._storage

    # -- blocks ---------------------------------------------------------------------------

    async def put_block(self, data: bytes, *, compress: bool = True) -> Hash:
        """Store ``data`` on its storage nodes; return its hash once a write quorum holds it.

        Raises ``QuorumError`` (with each failed node's cause) when fewer than
        ``write_quorum`` nodes acknowledged a durable write.
        """
        self._open()
        return await self._writer.put_block(data, compress=compress)

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

    # -- reference counts -------------------------------------------------------------------

    def transaction(self) -> AbstractContextManager[Transaction]:
        """A transaction on the node's database, for callers with their own tables.

        ``with bm.transaction() as tx: tx.execute(...); bm.incref(h, tx)`` commits the
        caller's rows and the reference change together. Do not ``await`` inside it:
        the connection is shared with the node's synchronous API.
        """
        self._open()
        return self._local().refs.transaction()

    def incref(self, hash: bytes, tx: Transaction | None = None) -> int:
        """Add a reference to a block; return the new count.

        When the count leaves zero, a resync check is queued in ``2 × rpc_timeout`` (in
        the same transaction) to fetch the block should it not arrive.
        """
        h = as_hash(hash)
        self._open()
        return self._local().refs.incref(h, tx)

    def decref(self, hash: bytes, tx: Transaction | None = None) -> int:
        """Drop a reference; return the new count.

        When it reaches zero the block becomes deletable after ``gc_delay``; the deletion
        check is queued for ``gc_delay + 10 s`` in the same transaction.
        """
        h = as_hash(hash)
        self._open()
        return self._local().refs.decref(h, tx)

    def get_block_rc(self, hash: bytes) -> int:
        """The local reference count of a block (0 when unreferenced)."""
        return self.get_rc_entry(hash).count

    def get_rc_entry(self, hash: bytes) -> RcEntry:
        """The block's row of the reference-count table: present, deletable or absent."""
        h = as_hash(hash)
        self._open()
        return self._local().refs.rc_entry(h)

    def rc_len(self) -> int:
        """Rows in the reference-count table (referenced or awaiting deletion)."""
        return self._local().ctx.db.rc_len()

    # -- cluster references ---------------------------------------------------------------

    async def add_reference(self, hash: bytes, owner: str | bytes) -> None:
        """Reference ``hash`` on behalf of ``owner`` on every storage node of the block.

        Returns once ``write_quorum`` storage nodes committed it, each counting it in its
        refcount; the others get it in the background or, should they miss it, through
        anti-entropy. Idempotent; a pair that was removed stays removed. ``owner`` is
        1..128 bytes (a ``str`` is its UTF-8 encoding). ``QuorumError`` (with each
        node's cause) when no quorum committed it. ``MissingBlockError`` when it was
        committed but none of the storage nodes that acknowledged it holds a copy of the
        block (never put, or collected before the reference came): put the block again.
        """
        nursery = self._open().require_open()
        await self._references.update(nursery, hash, owner, deleted=False)

    async def remove_reference(self, hash: bytes, owner: str | bytes) -> None:
        """Remove ``owner``'s reference to ``hash`` on every storage node (a tombstone).

        Like :meth:`add_reference`. A removed reference never comes back; once no live
        reference remains, the block is deleted after ``gc_delay``.
        """
        nursery = self._open().require_open()
        await self._references.update(nursery, hash, owner, deleted=True)

    async def add_references(self, pairs: Iterable[tuple[bytes, str | bytes]]) -> int:
        """:meth:`add_reference` for many ``(hash, owner)`` pairs in one call (async).

        One ``RefUpdate`` message per storage node (per 4096 pairs) instead of one per
        pair and node; each pair needs the same quorum as a single add. Returns the
        number of distinct pairs once every pair is settled. Raises
        ``ReferenceBatchError`` when some pairs failed: its ``failed`` maps each
        ``(hash, owner bytes)`` to a ``QuorumError`` (with each node's cause) or a
        ``MissingBlockError`` (the reference is recorded but no storage node that
        acknowledged it holds the block: put it again, see ``missing``); the other
        pairs are committed.

        Example::

            await bm.add_references([(h, "snapshot-7") for h in chunk_hashes])
        """
        nursery = self._open().require_open()
        return await self._app.update_many(nursery, pairs, deleted=False)

    async def remove_references(self, pairs: Iterable[tuple[bytes, str | bytes]]) -> int:
        """:meth:`remove_reference` for many ``(hash, owner)`` pairs in one call (async).

        Like :meth:`add_references` (a removal never raises ``MissingBlockError``).
        """
        nursery = self._open().require_open()
        return await self._app.update_many(nursery, pairs, deleted=True)

    async def missing_blocks(self, hashes: Iterable[bytes]) -> set[Hash]:
        """Which of ``hashes`` the cluster does not hold safely (async): those of which
        fewer than ``write_quorum`` storage nodes of the current layout version hold a
        copy. One question per storage node (per 1024 hashes); a node that cannot be
        asked counts as holding nothing. Put every hash returned (a put of a block some
        nodes hold only completes the missing copies), then add its references.

        Example::

            new = await bm.missing_blocks(chunk_hashes)
            for h in new:
                await bm.put_block(chunks[h])
        """
        self._open()
        return await self._app.missing_blocks(hashes)

    def owned_by(self, owner: str | bytes) -> AsyncGenerator[Hash, None]:
        """The hashes the cluster holds an alive reference of ``owner`` for (an async
        iterator, not a coroutine: ``async for h in bm.owned_by("snap-7")``).

        Every storage node of a live layout version is asked page by page (through its
        owner index); each hash comes once, in hash order, and a hash any node holds a
        tombstone of the pair for is left out. ``QuorumError`` when more storage nodes
        could not be asked than ``replication_factor - write_quorum`` (the listing could
        then miss references).
        """
        self._open()
        return self._app.owned_by(owner)

    async def remove_owner(self, owner: str | bytes) -> int:
        """Remove every reference of ``owner`` the cluster holds (async); return how many.

        :meth:`owned_by`, then :meth:`remove_references` in batches of 1024:
        deleting a snapshot, or the chunks of a lost manifest, is one call.
        ``ReferenceBatchError`` (``succeeded`` counting the pairs removed so far) or
        ``QuorumError`` (the listing failed) otherwise; calling it again is harmless.
        """
        nursery = self._open().require_open()
        return await self._app.remove_owner(nursery, owner)

    def ref_len(self) -> int:
        """Rows in this node's reference table (``block_ref``), tombstones included."""
        return len(self._local().ctx.db.refs)

    def references(self, hash: bytes) -> list[Reference]:
        """This node's view of the references to ``hash``, tombstones included."""
        self._open()
        return self._references.of_block(hash)

    async def sync_references(self) -> SyncReport:
        """Run a reference anti-entropy pass now (with every peer); return what it did."""
        worker = self._local().ref_sync
        wanted = worker.request()
        async with move_on_when(self._ctx.stopping.wait) as closing:
            await worker.completed.wait_value(lambda v: v >= wanted)
        if closing.cancelled_caught or worker.last_report is None:
            raise NodeClosedError(self.node_id)
        return worker.last_report

    # -- resync -------------------------------------------------------------------------------

    def resync_queue_len(self) -> int:
        """Entries in the resync queue (pending checks, due or not)."""
        return self._local().ctx.db.resync_queue_len()

    def resync_errors_len(self) -> int:
        """Blocks whose last resync failed (see :meth:`list_resync_errors`)."""
        return self._local().ctx.db.resync_errors_len()

    def list_resync_errors(self) -> list[ResyncErrorInfo]:
        """Blocks whose resync failed, with their back-off state."""
        self._open()
        return self._local().refs.list_resync_errors()

    def list_resync_queue(self, limit: int = 1000) -> list[QueuedResync]:
        """The first ``limit`` entries of the resync queue, earliest first."""
        self._open()
        return self._local().refs.list_resync_queue(limit)

    def retry_now(self, hash: bytes) -> bool:
        """Clear the back-off of an errored block and queue it for now.

        Returns whether the block had a resync error.
        """
        h = as_hash(hash)
        self._open()
        return self._local().refs.retry_now(h)

    def retry_all_now(self) -> int:
        """:meth:`retry_now` for every errored block; returns how many were queued."""
        self._open()
        return self._local().refs.retry_all_now()

    def purge(self, hash: bytes) -> int:
        """Forget an unrecoverable block: its refcount, error, queue entries and local copy.

        The local copy vanishes from lookups before this returns (its file is unlinked
        in the background). Returns the number of local copies removed.
        """
        h = as_hash(hash)
        self._open()
        return self._local().refs.purge(h)

    @property
    def resync_workers(self) -> int:
        """The resync workers always running (see :meth:`set_resync_workers`)."""
        return self._local().ctx.resync.n_workers

    @property
    def resync_tranquility(self) -> int:
        """The resync tranquility (see :meth:`set_resync_tranquility`)."""
        return self._local().ctx.resync.tranquility

    def set_resync_workers(self, n: int) -> int:
        """Run at least ``n`` (1..8) resync workers from now on; persisted across restarts.

        ``n`` is the pool's floor: while checks wait more than a second past their
        time, the node adds workers (up to 8) and lets them go after ten seconds with
        nothing due. Returns ``n``.
        """
        parts = self._local()
        ctx = parts.ctx
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 8:
            raise ValueError(f"resync workers must be 1..8, got {n!r}")
        ctx.db.set_setting("resync_workers", n)
        ctx.resync.n_workers = n
        parts.resync.ensure_running()
        ctx.notify_resync()
        return n

    def set_resync_tranquility(self, tranquility: int) -> int:
        """Sleep ``tranquility`` × the mean step time between resync steps; persisted.

        Returns ``tranquility``.
        """
        ctx = self._local().ctx
        if isinstance(tranquility, bool) or not isinstance(tranquility, int) or tranquility < 0:
            raise ValueError(f"tranquility must be a non-negative integer, got {tranquility!r}")
        ctx.db.set_setting("resync_tranquility", tranquility)
        ctx.resync.tranquility = tranquility
        return tranquility

    # -- operations ---------------------------------------------------------------------------

    async def scrub(self, cmd: str | int, seconds: float | None = None) -> ScrubStatus:
        """Control the scrub: ``"start"``, ``"pause"`` (for ``seconds``, default one
        day), ``"resume"``, ``"cancel"``, or an int tranquility (persisted).

        Returns the status after the command. ``ValueError`` for an unknown command.
        """
        self._open()
        return await self._local().operations.scrub(cmd, seconds)

    def scrub_status(self) -> ScrubStatus:
        """State, progress 0..1, last completion, next automatic run, corruptions found."""
        self._open()
        return self._local().operations.scrub_status()

    async def wait_scrub_runs(self, n: int = 1) -> None:
        """Wait until ``n`` scrub runs have completed since the node opened.

        ``NodeClosedError`` if the node closes first.
        """
        self._open()
        async with move_on_when(self._ctx.stopping.wait) as closing:
            await self._local().operations.wait_scrub_runs(n)
        if closing.cancelled_caught:
            raise NodeClosedError(self.node_id)

    async def repair(self, *, tranquility: int | None = None) -> RepairReport:
        """Queue every block known to the rc table or found on disk for resync (now).

        Returns once everything is queued; the resync workers do the rest. A second
        call while one runs waits for the same repair.
        """
        self._open()
        report = await self._local().operations.run("repair", tranquility=tranquility)
        assert isinstance(report, RepairReport)
        return report

    async def rebalance(self, *, tranquility: int | None = None) -> RebalanceReport:
        """Move every block to its primary directory; then forget the secondaries."""
        self._open()
        report = await self._local().operations.run("rebalance", tranquility=tranquility)
        assert isinstance(report, RebalanceReport)
        return report

    async def repair_refcounts(self, *, tranquility: int | None = None) -> RecountReport:
        """Recompute every count that references determine (async): each block with
        ``block_ref`` rows gets its alive rows as its count, fixed one transaction per
        batch; returns what changed. Blocks without rows (local ``incref``) keep theirs.
        A second call while one runs waits for the same recount."""
        self._open()
        report = await self._local().operations.run("refcounts", tranquility=tranquility)
        assert isinstance(report, RecountReport)
        return report

    async def block_info(self, hash: bytes) -> BlockInfo:
        """Everything this node holds about a block (async): count and state,
        references, local copies, storage nodes, resync queue entries and error."""
        h = as_hash(hash)
        return await local_block_info(self._local().ctx, h)

    async def cluster_block_info(self, hash: bytes) -> dict[str, BlockInfo | str]:
        """:meth:`block_info` of every storage node of the block (any live layout
        version), asked at once; a node that could not be asked maps to the reason."""
        h = as_hash(hash)
        self._open()
        local = None if self._storage is None else self._storage.ctx
        return await cluster_block_info(self._ctx, local, h)

    async def node_stats(self) -> NodeStats:
        """This node's blocks, bytes, references, queue, errors and free space (async)."""
        return await local_node_stats(self._local().ctx)

    async def cluster_stats(self) -> ClusterStats:
        """Every live node's :class:`NodeStats` and the cluster's usable capacity given
        the replication factor (async); works from any node, a gateway too."""
        self._open()
        local = None if self._storage is None else self._storage.ctx
        return await cluster_stats(self._ctx, local)

    async def snapshot_metadata(self) -> SnapshotInfo:
        """Take a consistent snapshot of this node's metadata database now (async),
        into ``metadata_dir/snapshots`` (the newest ``metadata_snapshots_kept`` stay)."""
        return await self._local().snapshots.take()

    async def metadata_snapshots(self) -> list[SnapshotInfo]:
        """This node's metadata snapshots, oldest first (async)."""
        return await self._local().snapshots.list()

    def start_operation(self, name: OperationName) -> OperationStatus:
        """Start ``"repair"``, ``"rebalance"`` or ``"refcounts"`` without waiting (or join
        the one running).

        Returns its status; follow it with :meth:`operation_status`.
        """
        self._open()
        self._local().operations.start(name)
        return self._local().operations.status(name)

    def operation_status(self, name: str) -> OperationStatus:
        """Where the last ``"repair"`` or ``"rebalance"`` started since opening is."""
        self._open()
        return self._local().operations.status(name)

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
        """Size and free space of the filesystem of each data directory."""
        ctx = self._local().ctx
        layout = ctx.store.layout
        return await run_blocking(
            disk_usage_sync,
            ctx.store.disk,
            list(layout.dirs),
            layout.read_only_dirs,
            limiter=ctx.cpu_limiter,
        )

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
