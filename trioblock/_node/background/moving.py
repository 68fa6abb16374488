"""Moving blocks and references to where the current layout version puts them.

Two units of the ``ref-sync`` worker's pass (through :class:`Mover`), after it has synced
with every peer of every live version (a new storage node pulls from the old ones then):

- :func:`hand_off_references`: the reference rows of hashes that **no live version**
  gives this node any more (the old versions are retired) are pushed to every storage
  node of the current version; once all of them committed a row, it is dropped here,
  and with it the local count (``RefCounts.decref_handed_off``). A block whose count
  falls to zero that way is deleted by the resync's ordinary GC path, which first asks
  the new storage nodes whether they need the block and sends it to those that do.
  While an old version is still live nothing is handed off: the new nodes pull.
- :func:`survey`: one scan of the count table that queues every referenced block this
  node should store and lacks (the missing-block pass) and counts what is left to move:
  blocks to fetch, blocks to hand off and their bytes. The pass then reports this
  node's progress into the layout history: *synced* to the version that was current
  when the pass began (when nothing failed and nothing is missing), *drained* (outside
  every live version, no reference row, no block copy).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from ..._core.hashing import Hash
from ..._core.layoutversion import LayoutVersion
from ..._core.refcrdt import RefTuple, ref_key
from ..._storage import Transaction, run_blocking
from ...errors import TransportError
from ..context import NodeContext, describe
from ..localcounts import RefCounts
from ..membership import Membership
from .blockwalk import BlockWalk

log = logging.getLogger("trioblock.layout")

#: Rows read per page, and pushed per request, while handing off.
HAND_OFF_PAGE = 512
#: Count rows looked at per batch by the survey.
SURVEY_BATCH = 256
#: Blocks the survey fetches at once (the move is not throttled by the resync's
#: tranquility: a node that joins, or replaces a dead one, is to be complete soon).
MOVE_FETCHES = 4


@dataclass
class Survey:
    """What one survey found (see :func:`survey`)."""

    to_fetch: int = 0
    to_hand_off: int = 0
    bytes_to_move: int = 0
    queued: int = 0
    fetched: int = 0


async def hand_off_references(ctx: NodeContext, counts: RefCounts) -> tuple[int, int]:
    """Hand off the rows no live version gives this node; (rows dropped, rows left)."""
    rpc = ctx.rpc
    me = ctx.node_id

    def not_mine(hash: bytes) -> bool:
        return not ctx.stores_in_live(me, hash)

    dropped = left = 0
    after = b""
    while True:
        page, more = await ctx.db.refs.page(b"", after, HAND_OFF_PAGE, not_mine)
        if not page:
            return dropped, left
        after = ref_key(page[-1][0], page[-1][1])
        by_node: dict[str, list[RefTuple]] = defaultdict(list)
        targets: dict[int, list[str]] = {}
        for i, entry in enumerate(page):
            nodes = [n for n in ctx.layout.storage_nodes(entry[0]) if n != me]
            targets[i] = nodes
            for node in nodes:
                by_node[node].append(entry)
        failed: set[str] = set()
        if by_node and rpc is None:
            raise TransportError("no transport configured to hand references off")

        async def push(node: str, entries: list[RefTuple], failed: set[str] = failed) -> None:
            assert rpc is not None
            try:
                with trio.fail_after(ctx.config.rpc_timeout):
                    await rpc.ref_update(node, entries, background=True)
            except Exception as exc:  # that node's rows stay here for the next pass
                failed.add(node)
                log.debug("%s: hand-off to %s failed: %s", me, node, describe(exc))

        async with trio.open_nursery() as nursery:
            for node, entries in by_node.items():
                nursery.start_soon(push, node, entries)
        done = [e for i, e in enumerate(page) if failed.isdisjoint(targets[i])]
        left += len(page) - len(done)

        def drop(tx: Transaction, done: list[RefTuple] = done) -> int:
            n = 0
            for entry in done:
                delta = ctx.db.refs.drop_in(tx, entry)
                if delta < 0:
                    counts.decref_handed_off(Hash(entry[0]), tx)
                n += 1
            return n

        if done:
            dropped += await ctx.db.write(drop)
            ctx.notify_resync()
        if not more:
            return dropped, left


async def survey(
    ctx: NodeContext, fetch: Callable[[Hash], Awaitable[None]] | None = None
) -> Survey:
    """Queue what this node lacks and count what it has left to move (see the module).

    With ``fetch`` (while a layout change concerns this node) the blocks it lacks are
    fetched here, a few at once, instead of waiting for the resync: a reference merged by
    anti-entropy queues its block a little later, as a fresh put's does (its copies may
    still be on their way), and tranquility throttles the resync. What fails stays
    queued for the resync. Without it, a block already queued is left to its entry."""
    found = Survey()
    limiter = trio.CapacityLimiter(MOVE_FETCHES)
    store, db = ctx.store, ctx.db
    after = b""
    while True:
        hashes = await db.rc_hashes(after, SURVEY_BATCH)
        if not hashes:
            return found
        after = bytes(hashes[-1])
        batch = [(h, db.get_rc(h).is_nonzero, ctx.is_storage_node(h)) for h in hashes]

        def look(batch: list[tuple[Hash, bool, bool]] = batch) -> list[tuple[Hash, int | None]]:
            out = []
            for h, referenced, mine in batch:
                if referenced or not mine:
                    loc = store.find_sync(h)
                    out.append((h, None if loc is None else loc.size))
            return out

        sizes = dict(await run_blocking(look, limiter=store.limiter))
        absent: list[bytes] = []
        for h, referenced, mine in batch:
            if h not in sizes:
                continue
            size = sizes[h]
            if mine and referenced and size is None:
                absent.append(bytes(h))
            elif not mine and size is not None:
                # The current version does not give it here: handed off (once no live
                # version does), then deleted. Counted from the start of the change, so
                # that the count never reads 0 between a retirement and the next pass.
                found.to_hand_off += 1
                found.bytes_to_move += size
        if absent:
            # Queued first, so that a crash loses nothing: due now, or, when fetched
            # right here, once that fetch is over.
            now = ctx.clock.now_msec()
            if fetch is None:
                added = await db.queue_unqueued(absent, now)
            else:
                when = now + 2 * ctx.config.rpc_timeout_msec
                added = await db.queue_unqueued(absent, when, due_by_msec=when)
            if added:
                ctx.notify_resync()
                found.queued += added
        if absent and fetch is not None:
            fetched = await _fetch_all(ctx, fetch, [Hash(h) for h in absent], limiter)
            found.fetched += fetched
            found.to_fetch += len(absent) - fetched
        else:
            found.to_fetch += len(absent)


async def _fetch_all(
    ctx: NodeContext,
    fetch: Callable[[Hash], Awaitable[None]],
    hashes: list[Hash],
    limiter: trio.CapacityLimiter,
) -> int:
    """Fetch ``hashes`` (``limiter`` bounding how many at once; the write takes each
    block's lock, and keeps a copy that arrived meanwhile); how many are here now."""
    done = 0

    async def one(h: Hash) -> None:
        nonlocal done
        async with limiter:
            try:
                if await ctx.store.find(h) is None:
                    await fetch(h)
                done += 1
            except Exception as exc:  # left to the resync's queue entry and back-off
                log.debug("%s: moving %s here failed: %s", ctx.node_id, h.short(), exc)

    async with trio.open_nursery() as nursery:
        for h in hashes:
            nursery.start_soon(one, h)
    return done


async def queue_leftover_copies(ctx: NodeContext) -> tuple[int, int]:
    """On a node outside every live version: queue every block file on disk for a
    resync check (copies that no count names, such as a block put but never
    referenced, are otherwise only found by a repair); (copies found, bytes)."""
    walk = BlockWalk(ctx.store.layout.dirs, ctx.store.limiter, disk=ctx.store.disk)
    found = size = 0
    now = ctx.clock.now_msec()
    while True:
        locations = await walk.take(SURVEY_BATCH)
        if not locations:
            return found, size
        found += len(locations)
        size += sum(loc.size for loc in locations)
        if await ctx.db.queue_unqueued([bytes(loc.hash) for loc in locations], now):
            ctx.notify_resync()


class Mover:
    """One node's part in a layout change: hand-off, survey, progress reports."""

    def __init__(
        self,
        ctx: NodeContext,
        membership: Membership,
        counts: RefCounts,
        fetch: Callable[[Hash], Awaitable[None]] | None,
    ) -> None:
        self._ctx = ctx
        self._membership = membership
        self._counts = counts
        self._fetch = fetch

    def moving(self) -> bool:
        """Whether a layout change concerns this node: several versions are live, or it
        drains (no role), or it still holds copies to hand off. Passes then come more
        often, and the survey fetches what is missing itself."""
        history = self._membership.history
        if history is None or history.current is None:
            return False
        me = self._ctx.node_id
        if len(history.live) > 1:
            return True
        mine = history.reports.get(me)
        if me not in history.current.roles:
            return mine is not None and not history.is_drained(me)
        return mine is not None and mine.to_hand_off > 0

    async def hand_off(self) -> int:
        """Hand off the rows no live version gives this node; how many were dropped."""
        history = self._membership.history
        if history is None or history.current is None:
            return 0
        dropped, left = await hand_off_references(self._ctx, self._counts)
        if dropped:
            log.info(
                "%s: handed %d reference row(s) off to their new storage nodes%s",
                self._ctx.node_id,
                dropped,
                f" ({left} left for the next pass)" if left else "",
            )
        return dropped

    async def survey(self, pass_version: int, failed: set[str]) -> Survey:
        """The survey (fetching itself while :meth:`moving`), then this node's report:
        ``pass_version`` was current when the pass began, ``failed`` are the peers it
        could not sync with."""
        found = await survey(self._ctx, self._fetch if self.moving() else None)
        await self._report(found, pass_version, failed)
        return found

    async def _report(self, found: Survey, started: int, failed: set[str]) -> None:
        history = self._membership.history
        if history is None or history.current is None:
            return
        ctx, me, current = self._ctx, self._ctx.node_id, history.current
        fields: dict[str, int] = {
            "to_fetch": found.to_fetch,
            "to_hand_off": found.to_hand_off,
            "bytes_to_move": found.bytes_to_move,
        }
        if (
            me not in history.live_nodes()
            and len(ctx.db.refs) == 0
            and ctx.store.stored.figures().blocks > found.to_hand_off
        ):
            # Copies no count names (put, never referenced): queued so that the
            # resync's GC path offloads or deletes them, as it does the others.
            leftover, size = await queue_leftover_copies(ctx)
            fields["to_hand_off"] = max(found.to_hand_off, leftover)
            fields["bytes_to_move"] = max(found.bytes_to_move, size)
        began = next((v for v in history.live if v.version == started), None)
        if (
            began is not None
            and me in began.roles
            and found.to_fetch == 0
            and history.synced(me) < started
            and self._pulled_enough(history.live, failed)
        ):
            fields["synced"] = started
        if (
            me not in history.live_nodes()
            and len(ctx.db.refs) == 0
            and ctx.store.stored.figures().blocks == 0
        ):
            fields["drained"] = current.version
        await self._membership.report(**fields)

    def _pulled_enough(self, live: tuple[LayoutVersion, ...], failed: set[str]) -> bool:
        """Whether the peers synced with in this pass hold every reference this node
        should have: for each partition of the current version giving it a copy, each
        live version's nodes of that partition that could not be synced are no more
        than that version can lose and still hold every acknowledged reference."""
        if not failed:
            return True
        me, current = self._ctx.node_id, live[-1]
        for p in current.partitions_of(me):
            for v in live:
                nodes = v.assignment[p]
                if sum(1 for n in nodes if n in failed) > v.replication_factor - v.write_quorum:
                    return False
        return True


__all__ = [
    "HAND_OFF_PAGE",
    "Mover",
    "Survey",
    "hand_off_references",
    "queue_leftover_copies",
    "survey",
]
