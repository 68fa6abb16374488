"""The reference recount: every count that references determine, recomputed from the
``block_ref`` rows (``bm.repair_refcounts()``, ``trioblock repair refcounts``).

Rules kept here:

- The worker walks the blocks having ``block_ref`` rows in hash order,
  :data:`RECOUNT_BATCH` at a time: which blocks is read in a worker thread; each batch
  is then recounted and fixed in one transaction (``_storage/recount.py``), so a merge
  committed meanwhile is counted, never undone.
- A fixed count writes what the transition implies: raised from nothing, a resync check
  in ``2 × rpc_timeout`` (fetch the block if missing); dropped to zero, deletable after
  ``gc_delay`` with its deletion check. The resync workers are notified per batch.
- A block without ``block_ref`` rows keeps its count (local ``incref``/``decref``).
- The first :data:`MAX_REPORTED_FIXES` changes are logged (warnings: a drift is a bug
  somewhere) and listed in the report; the totals count them all.
- Tranquility-throttled like repair; progress is the position in hash space.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace

import trio

from .._core.hashing import Hash
from .._core.tranquilizer import Tranquilizer
from .._storage import CountFix, fix_counts_in, referenced_hashes
from .background.blockwalk import hash_position
from .background.workers import StepResult, Throttled, Worker, WorkerInfo, WorkerState
from .context import NodeContext
from .localcounts import GC_CHECK_SLACK_MSEC

log = logging.getLogger("trioblock.repair")

RECOUNT_BATCH = 256
DEFAULT_RECOUNT_TRANQUILITY = 1
#: Most changes listed in a :class:`RecountReport` (the totals count them all).
MAX_REPORTED_FIXES = 100


@dataclass(frozen=True)
class CountChange:
    """One count the recount changed: before and after (a deletable or absent count
    is 0), and when a block left at 0 becomes deletable (node msec)."""

    hash: Hash
    old_count: int
    new_count: int
    deletable_at: int | None


@dataclass(frozen=True)
class RecountReport:
    """What a reference recount did: blocks with references checked, counts raised and
    lowered, and the first changes (``changes``, at most 100); times are node msec."""

    blocks_checked: int
    counts_raised: int
    counts_lowered: int
    changes: list[CountChange]
    started_at: int
    finished_at: int

    @property
    def counts_fixed(self) -> int:
        return self.counts_raised + self.counts_lowered


class RecountWorker(Worker):
    name = "recount"

    def __init__(self, ctx: NodeContext, *, tranquility: int = DEFAULT_RECOUNT_TRANQUILITY) -> None:
        super().__init__()
        self._ctx = ctx
        self.tranquility = tranquility
        self.tranquilizer = Tranquilizer()
        self.started_at = ctx.clock.now_msec()
        self._after = b""
        self.checked = 0
        self.raised = 0
        self.lowered = 0
        self.changes: list[CountChange] = []
        self.finished = trio.Event()
        self.report: RecountReport | None = None

    async def work(self) -> StepResult:
        ctx = self._ctx
        started = time.perf_counter()
        hashes = await referenced_hashes(ctx.db, self._after, RECOUNT_BATCH)
        if not hashes:
            self.report = RecountReport(
                self.checked,
                self.raised,
                self.lowered,
                list(self.changes),
                self.started_at,
                ctx.clock.now_msec(),
            )
            self.finished.set()
            log.log(
                logging.WARNING if self.raised + self.lowered else logging.INFO,
                "%s: reference recount: %d blocks checked, %d counts raised, %d lowered",
                ctx.node_id,
                self.checked,
                self.raised,
                self.lowered,
            )
            return WorkerState.DONE
        config = ctx.config
        fixes = await ctx.db.write(
            lambda tx: fix_counts_in(
                ctx.db,
                tx,
                hashes,
                now_msec=ctx.clock.now_msec(),
                fetch_check_msec=2 * config.rpc_timeout_msec,
                gc_delay_msec=config.gc_delay_msec,
                deletion_check_msec=config.gc_delay_msec + GC_CHECK_SLACK_MSEC,
            )
        )
        self._after = bytes(hashes[-1])
        self.checked += len(hashes)
        for fix in fixes:
            self._record(fix)
        if fixes:
            ctx.notify_resync()
        self.tranquilizer.record(time.perf_counter() - started)
        return Throttled(self.tranquilizer.delay(self.tranquility))

    def _record(self, fix: CountFix) -> None:
        if fix.new.count > fix.old.count:
            self.raised += 1
        else:
            self.lowered += 1
        if len(self.changes) >= MAX_REPORTED_FIXES:
            return  # counted; the final log line and the report give the totals
        self.changes.append(
            CountChange(fix.hash, fix.old.count, fix.new.count, fix.new.deletable_at)
        )
        log.warning(
            "%s: block %s counted %s but has %d live reference(s): count set to %s",
            self._ctx.node_id,
            fix.hash.short(),
            fix.old,
            fix.new.count,
            fix.new,
        )

    def info(self) -> WorkerInfo:
        done = self.report is not None
        return replace(
            super().info(),
            tranquility=self.tranquility,
            progress=1.0 if done else hash_position(self._after.hex()),
            info=f"{self.checked} blocks checked, {self.raised + self.lowered} counts fixed",
        )


__all__ = [
    "DEFAULT_RECOUNT_TRANQUILITY",
    "CountChange",
    "RecountReport",
    "RecountWorker",
]
