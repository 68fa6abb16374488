"""The resync workers: 1..8 tasks draining the ``resync_queue`` together.

How many: the operator's count (``set_resync_workers``, default 1) always runs; while
due entries wait more than a second behind the running workers, the pool adds workers
(one per half second, up to 8), and a worker above that floor leaves after ten seconds
with nothing due. Tranquility throttles each step, except on an entry more than 30 s
late: a node that far behind catches up first. (The rules: ``_core/resync.py``.)

Each unit looks at up to ``CHECK_BATCH`` due queue entries that no other resync worker
is handling (a shared busy set). Checks that find nothing to do — most of them: a put
queues a check of its block, which then finds it referenced and present — are settled
together (one worker-thread trip, one transaction) and never throttled; so are checks
that only have to wait (an unreferenced copy inside its GC delay), rescheduled — or
merged into a later check already queued for their block. Deletions found in the
batch (an unreferenced copy past its GC delay, or a row whose copy is gone) are done
together as one step (``ResyncExecutor.delete_batch``: each other storage node asked
once for the whole batch, one worker-thread trip for the lookups and one for the
unlinks, one transaction for the rows), throttled by tranquility after it in proportion
to its time. The entries left are remembered (``ResyncShared.needs_work``) so that
later looks do not check them again, and the first one is handled alone:

- if its time has not come, idles until then or until the queue changes;
- if the block's error counter says "not yet", moves the entry to the counter's next
  try and goes on;
- otherwise asks the node to resync the block: success clears the error counter and
  the entry; failure bumps the counter and requeues at the back-off time; a deferral
  requeues at the time the node asked for.

Every reschedule writes the new entry before removing the old one (see metadata.py).
What "resync the block" means is ``ResyncExecutor``'s job (``resync_exec.py``):
fetch a referenced block this storage node lacks; offload an unreferenced one to the
storage nodes that need it, then delete it (GC).
"""

from __future__ import annotations

import logging
from typing import Protocol

import trio

from ..._core.config import MAX_RESYNC_WORKERS
from ..._core.hashing import Hash
from ..._core.rcentry import parse_queue_key
from ..._core.resync import (
    SHRINK_IDLE_MSEC,
    ResyncAction,
    decide_resync,
    should_grow,
    should_shrink,
    throttled,
)
from ..._core.tranquilizer import Tranquilizer
from ..._storage import queue_after, resync_defer_many, resync_succeeded_many, run_blocking
from ..context import NodeContext, ResyncShared, describe
from .resync_exec import DeletionDeferred
from .workers import (
    StepResult,
    Throttled,
    Worker,
    WorkerInfo,
    WorkerRegistry,
    WorkerState,
    with_details,
)

log = logging.getLogger("trioblock.resync")

#: Due queue entries looked at together for checks with nothing to do (no-ops).
CHECK_BATCH = 64

#: Upper bound on an idle wait, a safety net should a notification ever be missed
#: (every queue change notifies; long enough not to cost anything in virtual time).
MAX_IDLE = 600.0


class ResyncTarget(Protocol):
    """What a resync worker runs for each due entry."""

    async def resync_block(self, hash: Hash) -> int | None:
        """Bring one block in order; return a time (msec) to look again, or None."""
        ...

    async def delete_batch(self, entries: list[tuple[bytes, Hash]]) -> object:
        """Offload and delete the blocks of due entries, and settle every entry."""
        ...


#: Decisions settled by a batch of deletions rather than one entry at a time.
_BATCHED_DELETIONS = frozenset({ResyncAction.OFFLOAD_AND_DELETE, ResyncAction.CLEAR_RC})


class ResyncWorker(Worker):
    def __init__(
        self, index: int, ctx: NodeContext, target: ResyncTarget, pool: ResyncPool
    ) -> None:
        super().__init__()
        self.index = index
        self.name = f"resync-{index}"
        self.node = ctx
        self.target = target
        self.pool = pool
        self.shared: ResyncShared = ctx.resync
        self.tranquilizer = Tranquilizer()
        self._token = 0
        self._wake_at: float | None = None
        #: node msec since when this worker has found nothing due (None: it has work)
        self._idle_since: int | None = None

    async def work(self) -> StepResult:
        shared, node = self.shared, self.node
        if self.index >= shared.active:
            return WorkerState.DONE
        self._token = shared.generation.value
        self._wake_at = None
        now = node.clock.now_msec()
        due: list[tuple[bytes, Hash]] = []
        # Only due entries are read: most wake-ups (a reference added, a put) find the
        # new entry due later, and need just the time of the first one.
        for key, hash in node.db.queue_head(len(shared.busy) + CHECK_BATCH, due_by_msec=now):
            if hash in shared.busy:
                continue
            due.append((key, hash))
            if len(due) == CHECK_BATCH:
                break
        if not due:
            when = node.db.queue_next_after(now)
            if when is not None:
                self._wake_at = node.clock.trio_time_of(when)
            return self._idle(now)
        self._idle_since = None
        # Entries an earlier look found needing real work are not looked at again; when
        # they fill the head, the look goes past them (cheap checks are not kept waiting
        # behind a backlog of deletions).
        fresh = [(key, hash) for key, hash in due if key not in shared.needs_work]
        if len(due) == CHECK_BATCH and len(fresh) < CHECK_BATCH // 2:
            fresh.extend(self._look_further(due[-1][0], now))
        elif len(due) < CHECK_BATCH:
            shared.scan_cursor = None
        if len(fresh) > 1:
            hashes = {hash for _key, hash in fresh}
            shared.busy.update(hashes)
            try:
                rest, deletions = await self._settle_batch(fresh, now)
                if deletions:
                    shared.remember_work(key for key, _hash in rest)
                    shared.busy.difference_update(hashes - {h for _k, h in deletions})
                    return await self._delete_batch(deletions, due, now)
            finally:
                shared.busy.difference_update(hashes)
            if len(rest) < len(fresh):
                kept = {key for key, _hash in rest}
                due = [(k, h) for k, h in due if k in kept or k in shared.needs_work]
            shared.remember_work(key for key, _hash in rest)
            if not due:
                # Only checks settled in the batch: nothing worth throttling, go on at once.
                return WorkerState.BUSY
        key, hash = due[0]
        if len(due) > 1:
            self._maybe_grow(now - parse_queue_key(due[1][0])[0])
        shared.busy.add(hash)
        try:
            return await self._handle(key, hash, now)
        finally:
            shared.busy.discard(hash)
            shared.needs_work.discard(key)

    def _look_further(self, after: bytes, now: int) -> list[tuple[bytes, Hash]]:
        """Due entries past ``after`` (and past where the last look stopped) that are
        neither busy nor known to need work, up to ``CHECK_BATCH``."""
        shared, node = self.shared, self.node
        cursor = shared.scan_cursor
        start = cursor if cursor is not None and cursor > after else after
        found: list[tuple[bytes, Hash]] = []
        for key, hash in queue_after(node.db, start, CHECK_BATCH):
            if parse_queue_key(key)[0] > now:
                break
            shared.scan_cursor = key
            if hash not in shared.busy and key not in shared.needs_work:
                found.append((key, hash))
        return found

    def _idle(self, now: int) -> StepResult:
        """Nothing due: wait for work, or leave the pool when idle long enough above its
        floor (the next one down may then leave too: every worker is notified)."""
        shared = self.shared
        if self._idle_since is None:
            self._idle_since = now
        if should_shrink(
            index=self.index,
            active=shared.active,
            floor=shared.n_workers,
            idle_msec=now - self._idle_since,
        ):
            shared.active -= 1
            log.debug("%s: resync pool shrinks to %d worker(s)", self.node.node_id, shared.active)
            shared.notify()
            return WorkerState.DONE
        leave_at_msec = self._idle_since + SHRINK_IDLE_MSEC
        if self.index >= shared.n_workers and leave_at_msec > now:
            # Look again when it may leave. Past that time a worker that could not leave
            # (not the highest-numbered) waits for a notification: the one above it
            # leaving notifies every worker.
            leave_at = self.node.clock.trio_time_of(leave_at_msec)
            self._wake_at = leave_at if self._wake_at is None else min(self._wake_at, leave_at)
        return WorkerState.IDLE

    def _maybe_grow(self, overdue_msec: int) -> None:
        """Another entry needing work waits ``overdue_msec`` past its time while this
        worker takes one: add a worker when the rules say so."""
        shared = self.shared
        now = trio.current_time()
        since = None if shared.grown_at is None else int((now - shared.grown_at) * 1000)
        if should_grow(active=shared.active, overdue_msec=overdue_msec, since_grown_msec=since):
            shared.grown_at = now
            self.pool.grow()

    async def _settle_batch(
        self, due: list[tuple[bytes, Hash]], now: int
    ) -> tuple[list[tuple[bytes, Hash]], list[tuple[bytes, Hash]]]:
        """Settle the due entries whose check needs no work; return the others: those
        needing the full path, and the deletions (offload-and-delete, or clear a row
        whose copy is gone) for :meth:`_delete_batch`.

        Most checks are no-ops (a put's check finds its block referenced and present);
        others only wait (an unreferenced copy still inside its GC delay). They are
        decided together: one worker-thread trip looks every copy up, the counts are
        read before and after it (an entry whose count moved meanwhile, or with an error
        counter, is left to the full path), and one transaction drops the no-ops,
        another reschedules the waits — or drops a wait when its block already has a
        later check queued (the deletion check a decref queued, say). Nothing is
        destroyed here, and any later change of a block's count queues a check of its
        own.
        """
        node = self.node
        hashes = list(dict.fromkeys(hash for _key, hash in due))
        before = {hash: node.db.get_rc(hash) for hash in hashes}
        store = node.store
        found = await run_blocking(
            lambda: [store.find_sync(hash) for hash in hashes], limiter=store.limiter
        )
        locs = dict(zip(hashes, found, strict=True))
        settled: list[tuple[bytes, bytes]] = []
        waits: list[tuple[bytes, bytes, int]] = []
        rest: list[tuple[bytes, Hash]] = []
        deletions: list[tuple[bytes, Hash]] = []
        for key, hash in due:
            rc = node.db.get_rc(hash)
            loc = locs[hash]
            if rc != before[hash] or node.db.get_error(hash) is not None:
                rest.append((key, hash))
                continue
            decision = decide_resync(
                exists=loc is not None,
                rc=rc,
                now_msec=now,
                is_storage_node=node.is_storage_node(hash),
                written_at_msec=loc.written_at_msec if loc is not None else None,
                gc_delay_msec=node.config.gc_delay_msec,
            )
            if decision.action is ResyncAction.NOTHING:
                settled.append((key, hash))
            elif decision.action is ResyncAction.DEFER and decision.retry_at is not None:
                waits.append((key, hash, decision.retry_at))
            elif decision.action in _BATCHED_DELETIONS:
                deletions.append((key, hash))
            else:
                rest.append((key, hash))
        if settled:
            await resync_succeeded_many(node.db, settled)
        if waits:
            await resync_defer_many(node.db, waits)
            node.notify_resync()
        node.metrics.resyncs += len(settled) + len(waits)
        return rest, deletions

    async def _delete_batch(
        self,
        deletions: list[tuple[bytes, Hash]],
        due: list[tuple[bytes, Hash]],
        now: int,
    ) -> StepResult:
        """Run a batch of deletions (``ResyncExecutor.delete_batch``: every other
        storage node asked once, one thread trip for the lookups, one for the unlinks,
        one transaction for the rows), then throttle in proportion to its time."""
        node = self.node
        if len(due) == CHECK_BATCH:
            # The look was full: the entries behind it wait too.
            self._maybe_grow(now - parse_queue_key(due[-1][0])[0])
        started = trio.current_time()
        try:
            await self.target.delete_batch(deletions)
        finally:
            elapsed = trio.current_time() - started
            node.metrics.resyncs += len(deletions)
            node.metrics.resync_duration.observe(elapsed)
            self.tranquilizer.record(elapsed)
        if not throttled(now - parse_queue_key(deletions[0][0])[0]):
            return WorkerState.BUSY
        return Throttled(self.tranquilizer.delay(self.shared.tranquility))

    async def _handle(self, key: bytes, hash: Hash, now: int) -> StepResult:
        node = self.node
        delay = node.resync_retry_delay_msec
        counter = node.db.get_error(hash)
        if counter is not None and now < counter.next_try(delay):
            await node.db.queue_move(key, hash, counter.next_try(delay))
            return WorkerState.BUSY
        started = trio.current_time()
        try:
            retry_at = await self.target.resync_block(hash)
        except Exception as exc:
            node.metrics.resync_errors += 1
            counter = await node.db.resync_failed(key, hash, node.clock.now_msec(), delay)
            # A refused deletion was logged once by the GC; other failures each time.
            level = logging.DEBUG if isinstance(exc, DeletionDeferred) else logging.WARNING
            log.log(
                level,
                "%s: resync of %s failed (%d in a row, next try in %.0fs): %s",
                node.node_id,
                hash.short(),
                counter.errors,
                counter.delay_msec(delay) / 1000,
                describe(exc),
            )
        else:
            if retry_at is not None:
                # Merged into a later check of the block when one is queued already.
                await resync_defer_many(node.db, [(key, hash, retry_at)])
            else:
                await node.db.resync_succeeded(key, hash)
        finally:
            # Node-clock durations: real time normally, virtual time under a MockClock
            # (where inline disk work takes none, keeping simulations deterministic).
            elapsed = trio.current_time() - started
            node.metrics.resyncs += 1
            node.metrics.resync_duration.observe(elapsed)
            self.tranquilizer.record(elapsed)
        if not throttled(now - parse_queue_key(key)[0]):
            # Far behind: catch up first (tranquility trades I/O for latency, not for
            # a backlog that only grows).
            return WorkerState.BUSY
        return Throttled(self.tranquilizer.delay(self.shared.tranquility))

    async def wait_for_work(self) -> None:
        token = self._token
        deadline = trio.current_time() + MAX_IDLE
        if self._wake_at is not None:
            deadline = min(deadline, self._wake_at)
        with trio.move_on_at(deadline):
            await self.shared.generation.wait_value(lambda v: v > token)

    def info(self) -> WorkerInfo:
        db = self.node.db
        queue_length = None if db.closed else db.resync_queue_len()
        return with_details(
            super().info(), queue_length=queue_length, tranquility=self.shared.tranquility
        )


class ResyncPool:
    """The running resync workers: ``ctx.resync.active`` of them (see ``ResyncShared``).

    The operator's count (``n_workers``) always runs; :meth:`grow` adds one more, up to
    ``MAX_RESYNC_WORKERS``, when a worker finds the queue falling behind, and a worker
    above the floor leaves after a while with nothing due.
    """

    def __init__(self, ctx: NodeContext, workers: WorkerRegistry, target: ResyncTarget) -> None:
        self._ctx = ctx
        self._workers = workers
        self._target = target

    def ensure_running(self) -> None:
        """Start workers up to the current count (extra ones stop themselves)."""
        nursery = self._ctx.require_open()
        running = {w.index for w in self._workers if isinstance(w, ResyncWorker)}
        for index in range(self._ctx.resync.active):
            if index not in running:
                self._workers.add(nursery, ResyncWorker(index, self._ctx, self._target, self))

    @property
    def n_workers(self) -> int:
        """The operator's worker count: the pool's floor."""
        return self._ctx.resync.n_workers

    @property
    def tranquility(self) -> int:
        """The workers' tranquility."""
        return self._ctx.resync.tranquility

    def set_workers(self, n: int) -> int:
        """Run at least ``n`` (1..8) workers from now on; persisted. Returns ``n``."""
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_RESYNC_WORKERS:
            raise ValueError(f"resync workers must be 1..{MAX_RESYNC_WORKERS}, got {n!r}")
        self._ctx.db.set_setting("resync_workers", n)
        self._ctx.resync.n_workers = n
        self.ensure_running()
        self._ctx.notify_resync()
        return n

    def set_tranquility(self, tranquility: int) -> int:
        """Sleep ``tranquility`` x the mean step time between steps; persisted."""
        if isinstance(tranquility, bool) or not isinstance(tranquility, int) or tranquility < 0:
            raise ValueError(f"tranquility must be a non-negative integer, got {tranquility!r}")
        self._ctx.db.set_setting("resync_tranquility", tranquility)
        self._ctx.resync.tranquility = tranquility
        return tranquility

    def grow(self) -> None:
        """Run one more worker (none past ``MAX_RESYNC_WORKERS``, none once closing)."""
        shared = self._ctx.resync
        if shared.active >= MAX_RESYNC_WORKERS or self._ctx.stopping.is_set():
            return
        shared.active += 1
        log.info("%s: resync behind its queue: %d worker(s) now", self._ctx.node_id, shared.active)
        self.ensure_running()
        shared.notify()


__all__ = [
    "ResyncPool",
    "ResyncShared",
    "ResyncTarget",
    "ResyncWorker",
]
