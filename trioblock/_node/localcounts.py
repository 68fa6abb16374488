"""Reference counts, the resync queue as users and operators see it, and purge.

Every refcount change and its resync entry are written in one SQLite transaction
(``MetadataDb.incref`` / ``decref``): incref queues a check in ``2 × rpc_timeout`` (to
fetch the block should it not arrive), a decref to zero queues the deletion check for
``gc_delay + 10 s``. The resync workers are notified once the transaction commits.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .._core.block import BlockHeader
from .._core.hashing import Hash
from .._core.rcentry import RcEntry, parse_queue_key
from .._storage import BlockLocation, BlockStore, ResyncErrorInfo, Transaction, block_path
from .context import NodeContext

log = logging.getLogger("trioblock.node")

#: Extra delay after the GC delay before the deletion check runs (as Garage does).
GC_CHECK_SLACK_MSEC = 10_000


@dataclass(frozen=True)
class QueuedResync:
    """One entry of the resync queue: the block and when (node msec) it is due."""

    hash: Hash
    when: int


class RefCounts:
    """The node's reference counts and resync bookkeeping (foreground database)."""

    def __init__(self, ctx: NodeContext) -> None:
        self._ctx = ctx

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        ctx = self._ctx
        with ctx.db.transaction() as tx:
            tx.on_commit.append(ctx.notify_resync)
            yield tx

    def incref(self, hash: Hash, tx: Transaction | None) -> int:
        ctx = self._ctx
        now = ctx.clock.now_msec()
        entry, queued = ctx.db.incref(
            hash, now_msec=now, resync_at=now + 2 * ctx.config.rpc_timeout_msec, tx=tx
        )
        if queued and tx is None:
            ctx.notify_resync()
        return entry.count

    def decref(self, hash: Hash, tx: Transaction | None) -> int:
        ctx = self._ctx
        entry, queued = ctx.db.decref(
            hash,
            now_msec=ctx.clock.now_msec(),
            gc_delay_msec=ctx.config.gc_delay_msec,
            resync_delay_msec=ctx.config.gc_delay_msec + GC_CHECK_SLACK_MSEC,
            tx=tx,
        )
        if queued and tx is None:
            ctx.notify_resync()
        return entry.count

    def unreferenced(self, hash: Hash, tx: Transaction) -> bool:
        """A tombstone was merged for a pair never seen alive here. When the block has
        no count row (nothing counted, no deletion pending), queue the deletion check
        for ``gc_delay + 10 s``, as a decref to zero would: a copy held here (a put that
        went through this node, an add that never reached it) then goes the ordinary
        GC way (offload, then delete; a copy written less than ``gc_delay`` before the
        check waits its turn), and without a copy the check does nothing. No count
        changes. Returns whether a check was queued."""
        ctx = self._ctx
        delay = ctx.config.gc_delay_msec + GC_CHECK_SLACK_MSEC
        queued = ctx.db.queue_if_absent(hash, when_msec=ctx.clock.now_msec() + delay, tx=tx)
        if queued:
            tx.on_commit.append(ctx.notify_resync)
        return queued

    def decref_handed_off(self, hash: Hash, tx: Transaction) -> int:
        """Drop a reference this node handed off to the block's new storage nodes: at
        zero the block is deletable at once (they hold the reference, so they ask for
        the block before this node deletes its copy)."""
        ctx = self._ctx
        entry, _queued = ctx.db.decref(
            hash, now_msec=ctx.clock.now_msec(), gc_delay_msec=0, resync_delay_msec=1, tx=tx
        )
        return entry.count

    def rc_entry(self, hash: Hash) -> RcEntry:
        return self._ctx.db.get_rc(hash)

    def list_resync_errors(self) -> list[ResyncErrorInfo]:
        return self._ctx.db.list_resync_errors(self._ctx.resync_retry_delay_msec)

    def list_resync_queue(self, limit: int) -> list[QueuedResync]:
        out = []
        for key, hash in self._ctx.db.queue_head(limit):
            when, _ = parse_queue_key(key)
            out.append(QueuedResync(hash, when))
        return out

    def retry_now(self, hash: Hash) -> bool:
        ctx = self._ctx
        had_error = ctx.db.retry_now(hash, ctx.clock.now_msec())
        ctx.notify_resync()
        return had_error

    def retry_all_now(self) -> int:
        ctx = self._ctx
        count = ctx.db.retry_all_now(ctx.clock.now_msec())
        ctx.notify_resync()
        return count

    def purge(self, hash: Hash) -> int:
        """Forget ``hash`` and detach its local copies; return how many were removed."""
        ctx = self._ctx
        ctx.db.purge(hash)
        removed = self._detach_all_copies(hash)
        if ctx.store.locks.locked(hash):
            # A write or move of this block is under way: remove what it leaves, too.
            ctx.spawn_background(f"purge of {hash.short()}", self._purge_files_locked, hash)
        log.warning(
            "%s: purged block %s (%d local copies removed)", ctx.node_id, hash.hex(), removed
        )
        return removed

    def _detach_all_copies(self, hash: Hash) -> int:
        ctx = self._ctx
        trash = detach_all_copies(ctx.store, hash)
        for path in trash:
            ctx.spawn_background(f"unlink of purged {hash.short()}", ctx.store.discard, path)
        return len(trash)

    async def _purge_files_locked(self, hash: Hash) -> None:
        async with self._ctx.store.locks.hold(hash):
            self._detach_all_copies(hash)


def detach_all_copies(store: BlockStore, hash: Hash) -> list[Path]:
    """Rename every copy of ``hash`` away, in every data directory (a copy may sit
    outside its primary: spilled there when the primary was full or failing), on the
    calling thread (see ``BlockStore.detach_now``); the temp names to unlink."""
    trash: list[Path] = []
    for root in store.layout.search_roots(hash):
        for header in (BlockHeader.COMPRESSED, BlockHeader.PLAIN):
            loc = BlockLocation(hash, block_path(Path(root), hash, header), header, 0, 0)
            detached = store.detach_now(loc)
            if detached is not None:
                trash.append(detached)
    return trash


__all__ = ["GC_CHECK_SLACK_MSEC", "QueuedResync", "RefCounts", "detach_all_copies"]
