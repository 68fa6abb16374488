"""Reference anti-entropy: the ``ref-sync`` worker.

Every ``ref_sync_interval`` (and on demand, :meth:`RefSyncWorker.request`) a pass runs
these units, one per :meth:`work` call, tranquility-throttled between them:

1. **Sync with each peer.** Both sides digest the entries they share (the hashes whose
   storage nodes include both) under a key prefix, starting from the whole key space.
   Equal digests end it in one round trip. A differing prefix is split into its 256
   children while it holds more than ``LEAF_ENTRIES`` entries; a small one is compared
   entry by entry: what the peer has is merged here, what the peer lacks or holds in an
   older state is pushed to it. Both nodes then hold the join of their entries.
2. **Collect tombstones.** A tombstone older than ``gc_delay`` is first pushed to every
   other storage node of its hash; only when all of them committed it are they told to
   drop it, and then it is dropped here. A node that cannot be reached keeps every
   tombstone it shares from being collected.
3. **Hand off** (``moving.py``): the reference rows of hashes no live layout version
   gives this node any more go to the current version's storage nodes, then are dropped.
4. **Survey** (``moving.py``): every referenced block this node should store and has no
   copy of is queued for resync now, so a lost file comes back without anyone reading
   it; what is left to move is counted, and this node's progress (synced to the
   version current when the pass began, drained) goes into the layout history.

While a layout change concerns this node (``Mover.moving``) a pass runs every
:data:`MOVE_PASS_INTERVAL` seconds (:data:`MOVE_PASS_INTERVAL_BUSY` after a pass that
moved something), a new version starts one at once, and the survey fetches what is
missing itself (outside a change, it only queues it for the resync). The peers of a
pass are the nodes of every live version.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace

import trio
from trio_util import AsyncValue, move_on_when

from ..._core.hashing import Hash
from ..._core.refcrdt import (
    RefState,
    RefTuple,
    children,
    missing_or_older,
    plan_descent,
    ref_key,
)
from ..._core.tranquilizer import Tranquilizer
from ..._net.rpc import RpcNode
from ..._storage import BlockStore, Keep, MetadataDb
from ...errors import NodeClosedError
from ..clock import NodeClock
from ..context import NodeContext
from ..localcounts import RefCounts
from ..membership import Membership
from ..refupdates import References
from .moving import Mover, survey
from .workers import StepResult, Throttled, Worker, WorkerInfo, WorkerState

log = logging.getLogger("trioblock.refsync")

PAGE = 1024
PUSH_CHUNK = 1024
TOMBSTONE_BATCH = 256
DEFAULT_TRANQUILITY = 2
#: Seconds between passes while a layout change is under way.
MOVE_PASS_INTERVAL = 5.0
#: ... and when the last pass moved something (the next one may confirm it is done).
MOVE_PASS_INTERVAL_BUSY = 1.0


@dataclass
class SyncReport:
    """What one anti-entropy pass did (``BlockManager.sync_references``).

    ``pulled`` / ``pushed``: entries merged here / sent to peers; ``collected``:
    tombstones dropped here; ``missing``: referenced blocks queued for fetching;
    ``failed``: peers that could not be synced, with the reason.
    """

    pulled: int = 0
    pushed: int = 0
    collected: int = 0
    missing: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    #: reference rows handed off to new storage nodes and dropped here
    handed_off: int = 0


def _entry_dict(entries: list[RefTuple]) -> dict[bytes, RefState]:
    return {ref_key(h, o): RefState(d, ts) for h, o, d, ts in entries}


class RefSyncWorker(Worker):
    """Runs anti-entropy passes; one unit per peer, then tombstones, then missing blocks."""

    name = "ref-sync"

    def __init__(
        self,
        ctx: NodeContext,
        refs: References,
        *,
        counts: RefCounts | None = None,
        membership: Membership | None = None,
        fetch: Callable[[Hash], Awaitable[None]] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__()
        self.refs = refs
        self.ctx = ctx
        self.membership = membership
        self._mover = (
            None if membership is None or counts is None else Mover(ctx, membership, counts, fetch)
        )
        self._pass_version = 0
        self._seen_change = 0 if membership is None else membership.changed.value
        self.db: MetadataDb = ctx.db
        self.store: BlockStore = ctx.store
        self.tranquility = DEFAULT_TRANQUILITY
        self.tranquilizer = Tranquilizer()
        # Seeded by the node id: reproducible under a MockClock, different per node.
        self._rng = rng or random.Random(ctx.node_id)
        self._units: list[str] = []
        self._report = SyncReport()
        self._next_pass_at = trio.current_time() + self._jitter()
        self.requested = AsyncValue(0)
        self.completed = AsyncValue(0)
        self.last_report: SyncReport | None = None
        self._pass_for = 0

    def _jitter(self) -> float:
        # The first pass comes soon after start (a restarted or wiped node catches up
        # early), spread a little so that nodes started together do not sync in step.
        return self._rng.uniform(1.0, 5.0)

    @property
    def _clock(self) -> NodeClock:
        clock: NodeClock = self.ctx.clock
        return clock

    @property
    def _rpc(self) -> RpcNode | None:
        rpc: RpcNode | None = self.ctx.rpc
        return rpc

    def request(self) -> int:
        """Ask for a pass now; returns the number that pass will complete."""
        self.requested.value += 1
        wanted: int = self.requested.value
        return wanted

    async def sync_now(self) -> SyncReport:
        """Run a pass now (or join the one asked for) and return what it did;
        ``NodeClosedError`` if the node closes first."""
        wanted = self.request()
        async with move_on_when(self.ctx.stopping.wait) as closing:
            await self.completed.wait_value(lambda v: v >= wanted)
        if closing.cancelled_caught or self.last_report is None:
            raise NodeClosedError(self.ctx.node_id)
        return self.last_report

    # -- the worker loop -------------------------------------------------------------------

    async def work(self) -> StepResult:
        if not self._units:
            due = trio.current_time() >= self._next_pass_at
            if not due and self.requested.value <= self._pass_for:
                return WorkerState.IDLE
            self._pass_for = self.requested.value
            if self.membership is not None:
                self._seen_change = self.membership.changed.value
            self._pass_version = getattr(self.ctx.layout, "version", 0)
            peers = [n for n in self.ctx.live_nodes() if n != self.ctx.node_id]
            self._units = [f"peer:{p}" for p in peers] + ["tombstones", "handoff", "missing"]
            self._report = SyncReport()
        unit = self._units.pop(0)
        started = trio.current_time()
        counted_before = replace(self._report, failed=dict(self._report.failed))  # metrics
        try:
            if unit.startswith("peer:"):
                await self._sync_peer(unit[5:])
            elif unit == "tombstones":
                await self._collect_tombstones()
            elif unit == "handoff":
                await self._hand_off()
            else:
                await self._survey()
        finally:
            self._count_in_metrics(counted_before)
            self.tranquilizer.record(trio.current_time() - started)
            if not self._units:
                self._finish_pass()
        if self._mover is not None and self._mover.moving():
            # A layout change is under way: the pass goes on at once (its fetches are
            # bounded by the survey, and the sooner nodes are synced, the sooner the
            # old version stops costing every reference update a second quorum).
            return Throttled(0)
        return Throttled(self.tranquilizer.delay(self.tranquility))

    def _count_in_metrics(self, before: SyncReport) -> None:
        """Add what the unit just run did to the node's metrics."""
        metrics, report = self.ctx.metrics, self._report
        metrics.ref_entries_pulled += report.pulled - before.pulled
        metrics.ref_entries_pushed += report.pushed - before.pushed
        metrics.ref_tombstones_collected += report.collected - before.collected
        metrics.ref_missing_queued += report.missing - before.missing
        metrics.ref_sync_peer_failures += len(report.failed) - len(before.failed)

    def _finish_pass(self) -> None:
        self.ctx.metrics.ref_sync_passes += 1
        report = self._report
        self.last_report = report
        interval = self.ctx.config.ref_sync_interval
        if self._mover is not None and self._mover.moving():
            busy = report.pulled or report.missing or report.handed_off
            interval = min(interval, MOVE_PASS_INTERVAL_BUSY if busy else MOVE_PASS_INTERVAL)
        self._next_pass_at = trio.current_time() + interval
        self.completed.value = self._pass_for
        if report.pulled or report.pushed or report.collected or report.missing:
            log.info(
                "%s: reference sync: %d pulled, %d pushed, %d tombstones collected, "
                "%d missing blocks queued%s",
                self.ctx.node_id,
                report.pulled,
                report.pushed,
                report.collected,
                report.missing,
                "".join(f"; {p}: {why}" for p, why in sorted(report.failed.items())),
            )

    async def wait_for_work(self) -> None:
        token = self._pass_for
        with trio.move_on_at(self._next_pass_at):
            if self.membership is None:
                await self.requested.wait_value(lambda v: v > token)
                return
            changed = self.membership.changed
            seen = self._seen_change
            async with trio.open_nursery() as nursery:

                async def on_request() -> None:
                    await self.requested.wait_value(lambda v: v > token)
                    nursery.cancel_scope.cancel()

                async def on_layout() -> None:
                    await changed.wait_value(lambda v: v > seen)
                    # A new version (or retirement): a pass now, not at the interval.
                    self._next_pass_at = trio.current_time()
                    nursery.cancel_scope.cancel()

                nursery.start_soon(on_request)
                nursery.start_soon(on_layout)

    def info(self) -> WorkerInfo:
        rows = None if self.db.closed else len(self.db.refs)
        report = self.last_report
        summary = (
            None
            if report is None
            else f"last pass: {report.pulled} pulled, {report.pushed} pushed, "
            f"{report.collected} collected, {report.missing} missing queued, "
            f"{report.handed_off} handed off"
        )
        return replace(
            super().info(), queue_length=rows, tranquility=self.tranquility, info=summary
        )

    # -- 1. sync with one peer ---------------------------------------------------------------

    async def _sync_peer(self, peer: str) -> None:
        rpc = self._rpc
        if rpc is None:
            return
        timeout = self.ctx.config.rpc_timeout
        try:
            if self.membership is not None and self.membership.history is not None:
                # Agree on the live versions first: the entries each side shares with the
                # other are chosen by them, and a peer that has not heard of a new
                # version would offer this node nothing of what it is to hold.
                await self.membership.exchange(peer)
            keep = self.refs.shared_with(peer)
            prefixes = [b""]
            while prefixes:
                batch, prefixes = prefixes[:256], prefixes[256:]
                mine = await self.db.refs.digests(batch, keep)
                with trio.fail_after(timeout):
                    theirs = await rpc.ref_digests(peer, batch, background=True)
                leaves, split = plan_descent(batch, mine, theirs)
                for prefix in leaves:
                    await self._exchange(rpc, peer, prefix, keep)
                for prefix in split:
                    prefixes.extend(children(prefix))
        except (trio.TooSlowError, OSError) as exc:
            self._report.failed[peer] = f"timed out or unreachable: {exc!r}"
        except Exception as exc:  # a peer's failure is that peer's: the pass goes on
            self._report.failed[peer] = f"{type(exc).__name__}: {exc}"
            log.debug("%s: reference sync with %s failed: %r", self.ctx.node_id, peer, exc)

    async def _exchange(self, rpc: RpcNode, peer: str, prefix: bytes, keep: Keep) -> None:
        """Compare the entries under ``prefix`` one key window at a time.

        Both sides list their entries in key order, a page each; the window ends at the
        smaller of the two pages' last keys (or at the end of the prefix when both are
        complete). Within it, what the peer has is merged here and what it lacks or
        holds older is pushed to it. Memory stays at two pages however many entries
        (owners of one block included) the prefix holds.
        """
        timeout = self.ctx.config.rpc_timeout
        cursor = b""
        while True:
            with trio.fail_after(timeout):
                theirs, their_more = await rpc.ref_fetch(
                    peer, prefix, cursor, PAGE, background=True
                )
            mine, my_more = await self.db.refs.page(prefix, cursor, PAGE, keep)
            ends = [
                ref_key(p[-1][0], p[-1][1])
                for p, more in ((theirs, their_more), (mine, my_more))
                if more and p
            ]
            window_end = min(ends) if ends else None

            def inside(entry: RefTuple, end: bytes | None = window_end) -> bool:
                return end is None or ref_key(entry[0], entry[1]) <= end

            theirs = [e for e in theirs if inside(e)]
            mine = [e for e in mine if inside(e)]
            if theirs:
                self._report.pulled += await self.refs.merge(theirs)
            push_keys = set(missing_or_older(_entry_dict(mine), _entry_dict(theirs)))
            push = [e for e in mine if ref_key(e[0], e[1]) in push_keys]
            for start in range(0, len(push), PUSH_CHUNK):
                chunk = push[start : start + PUSH_CHUNK]
                with trio.fail_after(timeout):
                    await rpc.ref_update(peer, chunk, background=True)
                self._report.pushed += len(chunk)
            if window_end is None:
                return
            cursor = window_end

    # -- 2. tombstones -----------------------------------------------------------------------

    async def _collect_tombstones(self) -> None:
        cutoff = self._clock.now_msec() - self.ctx.config.gc_delay_msec
        after: RefTuple | None = None
        # Peers that failed in this pass (the sync with them, or an earlier batch) are
        # not asked again until the next pass: each attempt could cost an rpc_timeout,
        # once per batch. Their tombstones simply stay for now.
        failed = set(self._report.failed)
        while True:
            batch = await self.db.refs.old_tombstones(cutoff, after, TOMBSTONE_BATCH)
            if not batch:
                return
            after = batch[-1]
            self._report.collected += await self._collect_batch(batch, failed)
            await trio.lowlevel.checkpoint()

    async def _collect_batch(self, batch: list[RefTuple], failed: set[str]) -> int:
        """Collect one batch; nodes in ``failed`` are skipped, and new failures added."""
        ctx = self.ctx
        by_peer: dict[str, list[RefTuple]] = {}
        others_of: list[list[str]] = []
        for entry in batch:
            others = [
                n
                for n in dict.fromkeys(
                    n for v in ctx.live_layouts for n in v.storage_nodes(entry[0])
                )
                if n != ctx.node_id
            ]
            others_of.append(others)
            if failed.isdisjoint(others):
                for node in others:
                    by_peer.setdefault(node, []).append(entry)
        rpc = self._rpc
        if by_peer and rpc is None:
            return 0  # peers to tell, and no way to reach them

        async def each(call_name: str, entries_of: dict[str, list[RefTuple]]) -> None:
            if not entries_of or rpc is None:
                return

            async def one(node: str, entries: list[RefTuple]) -> None:
                try:
                    with trio.fail_after(ctx.config.rpc_timeout):
                        await getattr(rpc, call_name)(node, entries, background=True)
                except Exception as exc:  # that node keeps its tombstones for now
                    failed.add(node)
                    log.debug("%s: %s to %s failed: %r", ctx.node_id, call_name, node, exc)

            async with trio.open_nursery() as nursery:
                for node, entries in entries_of.items():
                    nursery.start_soon(one, node, entries)

        # Phase 1: every other storage node holds the tombstone.
        await each("ref_update", by_peer)
        ready = [e for e, others in zip(batch, others_of, strict=True) if not failed & set(others)]
        if not ready:
            return 0
        # Phase 2: they drop it; then we do.
        ready_keys = {ref_key(e[0], e[1]) for e in ready}
        collect_of = {
            node: [e for e in entries if ref_key(e[0], e[1]) in ready_keys]
            for node, entries in by_peer.items()
            if node not in failed
        }
        await each("ref_collect", {n: es for n, es in collect_of.items() if es})
        done = [e for e, others in zip(batch, others_of, strict=True) if not failed & set(others)]
        return await self.refs.collect(done)

    # -- 3. hand-off, 4. survey (``moving.py``) -------------------------------------------------

    async def _hand_off(self) -> None:
        if self._mover is not None:
            self._report.handed_off += await self._mover.hand_off()

    async def _survey(self) -> None:
        if self._mover is None:
            found = await survey(self.ctx)
        else:
            found = await self._mover.survey(self._pass_version, set(self._report.failed))
        self._report.missing += found.queued
        if found.queued:
            log.info(
                "%s: %d referenced block(s) have no local copy; queued for resync",
                self.ctx.node_id,
                found.queued,
            )


__all__ = ["DEFAULT_TRANQUILITY", "RefSyncWorker", "SyncReport"]
