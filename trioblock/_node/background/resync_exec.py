"""What a resync does with blocks: the ``ResyncExecutor``.

The decision is ``_core/resync.py``'s (a pure function of: copy here?, reference count,
time, storage node?, when the copy was last written); the executor performs it:

- **fetch**: a referenced block this storage node lacks is read from the peers (hedged,
  verified) and written here;
- **offload and delete** (GC), for one block or a batch of them (:meth:`delete_batch`):
  the other storage nodes are asked once per batch whether they need the blocks
  (``NeedBlocksQuery``, or ``NeedBlockQuery`` per block for an older peer) and sent the
  few they need (``gcoffload.py``); then, under the locks of the blocks (taken in hash
  order), one worker-thread trip looks every copy up, and — after ``db.wait_turn()``,
  with no await from there to the last rename — each block's count is re-derived from
  ``block_ref`` (live references the count lacks are restored, and the block kept),
  its decision re-checked, and its file renamed away. The renamed files are unlinked in
  one worker-thread trip, and one transaction drops the deleted blocks' count rows with
  their queue entries (and writes the batch's other outcomes). From the first rename
  to that commit nothing is cancelled (a shielded, bounded step): a cancelled batch
  leaves each block deleted with its rows dropped, or kept with its rows;
- **clear**: a Deletable row with no copy left is dropped.

Fetches are logged in summary: one INFO line per :data:`FETCH_LOG_WINDOW` seconds in
which the resync fetched blocks (how many, how many failed), each block at debug; a node
catching up thousands of blocks after a restart writes a handful of lines, not one per
block.

A storage node that cannot be asked or does not receive a block defers that block's
deletion with a :class:`DeletionDeferred` naming each node and its cause (logged once
per block, in one warning per batch for the new ones; the resync retries with back-off);
the other blocks of a batch go on. A batch logs one info line (how many deleted,
offloaded, deferred); single blocks at debug.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path

import trio

from ..._core.hashing import Hash
from ..._core.rcentry import RcEntry
from ..._core.resync import ResyncAction, decide_resync
from ..._storage import BlockLocation, ResyncBatchEnd, resync_end_batch, run_blocking
from ...errors import MissingBlockError
from ..context import NodeContext, describe
from ..localcounts import detach_all_copies
from ..reads import Reader
from ..writes import Writer
from .gcoffload import DeletionDeferred, Offloader

log = logging.getLogger("trioblock.resync")

#: Seconds of fetches summarised in one log line.
FETCH_LOG_WINDOW = 10.0


class FetchLog:
    """Counts the resync's fetches and logs them in one INFO line per window.

    The first fetch after a quiet spell opens a window (a task in the node's nursery);
    when it ends, one line says how many blocks were fetched and how many failed.
    """

    def __init__(self, ctx: NodeContext) -> None:
        self._ctx = ctx
        self.fetched = 0
        self.failed = 0
        self._open = False

    def record(self, ok: bool) -> None:
        """Count one fetch (``ok``: the block was stored here)."""
        if ok:
            self.fetched += 1
        else:
            self.failed += 1
        if not self._open:
            self._open = True
            self._ctx.spawn_background("resync fetch log", self._window)

    async def _window(self) -> None:
        try:
            await trio.sleep(FETCH_LOG_WINDOW)
        finally:
            self._open = False
            self.flush()

    def flush(self) -> None:
        """Log what was counted since the last line (nothing when nothing was)."""
        fetched, failed = self.fetched, self.failed
        self.fetched = self.failed = 0
        if fetched or failed:
            log.info(
                "%s: resync fetched %d referenced but absent block(s) from peers"
                "%s in the last %.0f s",
                self._ctx.node_id,
                fetched,
                f" ({failed} failed, retried later)" if failed else "",
                FETCH_LOG_WINDOW,
            )


@dataclass(slots=True)
class _Removal:
    """Outcome of the locked step of a deletion, per block."""

    #: files renamed away and unlinked
    deleted: list[Hash] = field(default_factory=list)
    #: no copy found under the lock (gone meanwhile, or quarantined): only rows left
    gone: list[Hash] = field(default_factory=list)
    #: kept: referenced again (None) or written again recently (when to look again)
    kept: dict[Hash, int | None] = field(default_factory=dict)
    #: the step failed for these blocks (nothing destroyed, or the file only renamed)
    failed: dict[Hash, Exception] = field(default_factory=dict)


@dataclass(slots=True)
class BatchOutcome:
    """What :meth:`ResyncExecutor.delete_batch` did, counted per entry."""

    deleted: int = 0
    cleared: int = 0
    kept: int = 0
    offloaded: int = 0
    deferred: int = 0
    failed: int = 0


class ResyncExecutor:
    """What a resync does with one block, or with a batch of deletions."""

    def __init__(self, ctx: NodeContext, reader: Reader, writer: Writer) -> None:
        self._ctx = ctx
        self._reader = reader
        self._offloader = Offloader(ctx, writer)
        self.fetch_log = FetchLog(ctx)
        #: blocks whose deferred deletion was logged (logged once per block)
        self._deferral_logged: set[Hash] = set()

    async def resync_block(self, hash: Hash) -> int | None:
        """Bring one block in order; return a time (msec) to look again, or None."""
        ctx = self._ctx
        async with ctx.store.locks.hold(hash):
            loc = await ctx.store.find(hash)
            rc = ctx.db.get_rc(hash)
        now = ctx.clock.now_msec()
        decision = decide_resync(
            exists=loc is not None,
            rc=rc,
            now_msec=now,
            is_storage_node=ctx.is_storage_node(hash),
            written_at_msec=loc.written_at_msec if loc is not None else None,
            gc_delay_msec=ctx.config.gc_delay_msec,
        )
        action = decision.action
        if action is not ResyncAction.OFFLOAD_AND_DELETE:
            self._deferral_logged.discard(hash)
        if action is ResyncAction.NOTHING:
            return None
        if action is ResyncAction.DEFER:
            return decision.retry_at
        if action is ResyncAction.CLEAR_RC:
            if not ctx.store.absence_is_durable(hash):
                return now + ctx.resync_retry_delay_msec
            await ctx.db.clear_deleted_rc(hash, now)
            return None
        if action is ResyncAction.FETCH:
            await self._fetch_missing(hash)
            return None
        return await self._offload_and_delete(hash)

    async def _fetch_missing(self, hash: Hash) -> None:
        ctx = self._ctx
        log.debug("%s: resync %s: referenced but absent, fetching", ctx.node_id, hash.short())
        if not ctx.peers_for_read(hash) or ctx.rpc is None:
            raise MissingBlockError(
                hash, f"block {hash.hex()} is referenced but absent and no peer can provide it"
            )
        try:
            await self._reader.fetch_and_store(hash)
        except Exception:
            self.fetch_log.record(ok=False)
            raise
        self.fetch_log.record(ok=True)
        ctx.metrics.resync_received += 1

    async def _offload_and_delete(self, hash: Hash) -> int | None:
        """Offload and delete one block (a batch of one, rows cleared on their own)."""
        ctx = self._ctx
        offload = await self._offloader.offload([hash])
        deferred = offload.deferred.get(hash)
        if deferred is not None:
            self._log_deferral(hash, deferred)
            raise deferred
        self._deferral_logged.discard(hash)

        async def clear(removal: _Removal, now: int) -> None:
            await ctx.db.clear_deleted_rc_many(removal.deleted + removal.gone, now)

        removal = await self._remove([hash], clear)
        if hash in removal.failed:
            raise removal.failed[hash]
        if hash in removal.deleted:
            log.info("%s: deleted unreferenced block %s", ctx.node_id, hash.short())
        return removal.kept.get(hash)

    async def delete_batch(self, entries: list[tuple[bytes, Hash]]) -> BatchOutcome:
        """Offload and delete the blocks of due queue entries whose decision was
        offload-and-delete (or clear), and settle every entry in one transaction: a
        deleted or gone block's count row and entry are dropped, a kept one's entry
        dropped or rescheduled, a deferred or failed one's error counter bumped and its
        entry requeued at the back-off time. Entries of one block share its outcome.
        """
        ctx = self._ctx
        hashes = list(dict.fromkeys(hash for _key, hash in entries))
        outcome = BatchOutcome()
        try:
            offload = await self._offloader.offload(hashes)
        except Exception as exc:  # no way to ask anyone: every entry fails
            await self._end(entries, _Removal(failed=dict.fromkeys(hashes, exc)), outcome)
            log.warning("%s: %d deletion(s) failed: %s", ctx.node_id, len(hashes), describe(exc))
            return outcome
        self._log_deferrals(offload.deferred)
        go = [h for h in hashes if h not in offload.deferred]
        self._deferral_logged.difference_update(go)
        ended = False

        async def end(removal: _Removal, _now: int) -> None:
            nonlocal ended
            ended = True
            removal.failed.update(offload.deferred)
            await self._end(entries, removal, outcome)

        try:
            removal = await self._remove(go, end)
        except Exception as exc:
            if ended:
                raise
            # Failed before anything was renamed (the lookups, say): every entry fails.
            removal = _Removal(failed={**dict.fromkeys(go, exc), **offload.deferred})
            await self._end(entries, removal, outcome)
        outcome.offloaded = sum(1 for h in offload.sent if h in removal.deleted)
        outcome.deferred = sum(1 for _k, h in entries if h in offload.deferred)
        outcome.failed -= outcome.deferred
        log.info(
            "%s: resync batch of %d: %d deleted (%d offloaded first), %d rows cleared, "
            "%d kept, %d deferred, %d failed",
            ctx.node_id,
            len(entries),
            outcome.deleted,
            outcome.offloaded,
            outcome.cleared,
            outcome.kept,
            outcome.deferred,
            outcome.failed,
        )
        return outcome

    async def _end(
        self, entries: list[tuple[bytes, Hash]], removal: _Removal, outcome: BatchOutcome
    ) -> None:
        """Write the outcome of a batch's entries in one transaction, and count it."""
        ctx = self._ctx
        end = ResyncBatchEnd()
        for key, hash in entries:
            if hash in removal.deleted or hash in removal.gone:
                end.cleared.append((key, hash))
            elif hash in removal.failed:
                end.failed.append((key, hash))
            elif removal.kept.get(hash) is not None:
                retry_at = removal.kept[hash]
                assert retry_at is not None
                end.defer.append((key, hash, retry_at))
            else:
                end.done.append((key, hash))
        now = ctx.clock.now_msec()
        counters = await resync_end_batch(ctx.db, end, now, ctx.resync_retry_delay_msec)
        if end.defer:
            ctx.notify_resync()
        outcome.deleted = sum(1 for _k, h in entries if h in removal.deleted)
        outcome.cleared = len(end.cleared) - outcome.deleted
        outcome.kept = len(end.done) + len(end.defer)
        outcome.failed = len(end.failed)
        ctx.metrics.resync_errors += len(end.failed)
        for _key, hash in entries:
            exc = removal.failed.get(hash)
            if exc is None:
                continue
            counter = counters[bytes(hash)]
            log.debug(
                "%s: resync of %s failed (%d in a row, next try in %.0fs): %s",
                ctx.node_id,
                hash.short(),
                counter.errors,
                counter.delay_msec(ctx.resync_retry_delay_msec) / 1000,
                describe(exc),
            )
            if not isinstance(exc, DeletionDeferred):
                log.warning("%s: deletion of %s failed: %s", ctx.node_id, hash.short(), exc)

    async def _remove(
        self, hashes: list[Hash], end: Callable[[_Removal, int], Awaitable[None]]
    ) -> _Removal:
        """The locked step of deleting ``hashes`` (see the module), then ``end``.

        ``end(removal, now)`` writes the rows; it runs, like the unlinks before it,
        still under the locks and shielded from cancellation once anything was renamed.
        """
        ctx = self._ctx
        store = ctx.store
        removal = _Removal()
        async with AsyncExitStack() as stack:
            for hash in sorted(hashes):
                await stack.enter_async_context(store.locks.hold(hash))
            found: list[BlockLocation | None] = []
            if hashes:
                found = await run_blocking(
                    lambda: [store.find_sync(h) for h in hashes], limiter=store.limiter
                )
            now = ctx.clock.now_msec()
            # Wait until no other task holds a transaction open; from here to the last
            # rename nothing awaits: an incref cannot slip in between, and a recount's
            # write cannot find the database busy.
            await ctx.db.wait_turn()
            trash: dict[Hash, list[Path]] = {}
            for hash, loc in zip(hashes, found, strict=True):
                try:
                    detached = self._detach_if_deletable(hash, loc, now, removal)
                except Exception as exc:  # that block only (a database error, say)
                    removal.failed[hash] = exc
                    continue
                if detached:
                    trash[hash] = detached
            with trio.CancelScope(shield=bool(trash)):
                if trash:
                    paths = [path for copies in trash.values() for path in copies]
                    errors = await run_blocking(
                        lambda: _discard_all(store.discard_sync, paths),
                        limiter=store.limiter,
                    )
                    at = 0
                    for hash, copies in trash.items():
                        failed = [e for e in errors[at : at + len(copies)] if e is not None]
                        at += len(copies)
                        error = failed[0] if failed else None
                        if error is None:
                            removal.deleted.append(hash)
                        else:
                            # Renamed away, not unlinked (the temp-file sweep will):
                            # its row stays until a later check finds no copy.
                            removal.failed[hash] = error
                await end(removal, now)
        ctx.metrics.deletes += len(removal.deleted)
        for hash in removal.deleted:
            log.debug("%s: deleted unreferenced block %s", ctx.node_id, hash.short())
        return removal

    def _detach_if_deletable(
        self, hash: Hash, loc: BlockLocation | None, now: int, removal: _Removal
    ) -> list[Path]:
        """Re-check one block under its lock and rename its files away (every copy, in
        any directory) if it is still to be deleted (synchronous: the caller awaits
        nothing around it); the temp names to unlink."""
        ctx = self._ctx
        if loc is None:
            # Gone meanwhile (or quarantined while offloading): only the row is left. Its
            # row stays while that absence may not survive a power cut (the unlink's
            # directory fsync failed): a copy back after one is then still deleted.
            if ctx.store.absence_is_durable(hash):
                removal.gone.append(hash)
            else:
                removal.kept[hash] = now + ctx.resync_retry_delay_msec
            return []
        rc = self._recount(hash, ctx.db.get_rc(hash))
        recheck = decide_resync(
            exists=True,
            rc=rc,
            now_msec=now,
            is_storage_node=ctx.is_storage_node(hash),
            written_at_msec=loc.written_at_msec,
            gc_delay_msec=ctx.config.gc_delay_msec,
        )
        if recheck.action is ResyncAction.DEFER:
            removal.kept[hash] = recheck.retry_at
            return []
        if recheck.action is not ResyncAction.OFFLOAD_AND_DELETE:
            removal.kept[hash] = None
            return []
        trash = detach_all_copies(ctx.store, hash)
        if not trash:
            removal.kept[hash] = None
        return trash

    def _log_deferrals(self, deferred: dict[Hash, DeletionDeferred]) -> None:
        """Log a batch's new deferrals in one warning (the first one's cause and how
        many more); each block is logged once until its deletion goes ahead."""
        new = [(h, exc) for h, exc in deferred.items() if h not in self._deferral_logged]
        if len(new) <= 1:
            for hash, exc in new:
                self._log_deferral(hash, exc)
            return
        self._deferral_logged.update(h for h, _exc in new)
        log.warning(
            "%s: %d unreferenced blocks kept for now (retrying with back-off), e.g. %s; "
            "and %d more",
            self._ctx.node_id,
            len(new),
            new[0][1],
            len(new) - 1,
        )

    def _log_deferral(self, hash: Hash, exc: DeletionDeferred) -> None:
        if hash not in self._deferral_logged:
            self._deferral_logged.add(hash)
            log.warning("%s: %s (retrying with back-off)", self._ctx.node_id, exc)

    def _recount(self, hash: Hash, rc: RcEntry) -> RcEntry:
        """The count re-derived from ``block_ref`` before a deletion (as Garage 1.2
        recounts): live references there that the count lacks are restored, never lost."""
        ctx = self._ctx
        alive, _rows = ctx.db.refs.count_alive(hash)
        if alive <= rc.count:
            return rc
        log.warning(
            "%s: block %s has %d live reference(s) but a count of %d: count repaired, kept",
            ctx.node_id,
            hash.short(),
            alive,
            rc.count,
        )
        return ctx.db.raise_rc_to(hash, alive)


def _discard_all(discard: Callable[[Path], None], paths: list[Path]) -> list[OSError | None]:
    """Unlink detached copies (one worker-thread trip); each one's error, or None."""
    errors: list[OSError | None] = []
    for path in paths:
        try:
            discard(path)
        except OSError as exc:
            errors.append(exc)
        else:
            errors.append(None)
    return errors


__all__ = ["BatchOutcome", "DeletionDeferred", "ResyncExecutor"]
