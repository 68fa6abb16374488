"""Cluster references: ``add_reference`` / ``remove_reference`` and their RPC side.

How a reference update travels: the caller's node stamps it with its clock → sends it
to every storage node of the hash at once (itself included when it is one) → each
storage node merges it into ``block_ref`` and, in the same transaction, changes its
local refcount when the pair flipped between alive and not alive → the call returns
once ``write_quorum`` nodes committed it; the other sends go on in the node's nursery
(bounded: at most :data:`MAX_BACKGROUND_SENDS` at once, further callers wait). Nodes
that missed it catch up through anti-entropy (``refsync.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import trio

from .._core.hashing import Hash
from .._core.refcrdt import Reference, RefTuple, check_tuple, owner_bytes
from .._storage import MetadataDb, Transaction, run_blocking
from ..errors import (
    MissingBlockError,
    QuorumError,
    StaleLayoutError,
    TransportError,
    TrioblockError,
)
from .context import PeerContext, as_hash
from .localcounts import RefCounts
from .quorum import call_quorum

log = logging.getLogger("trioblock.refs")

#: Reference sends to other nodes allowed in flight at once (beyond that, callers wait).
MAX_BACKGROUND_SENDS = 1024
#: Entries merged per local transaction (the Trio thread yields between chunks).
MERGE_CHUNK = 256


class References:
    """Reference updates of one node: sending, merging, listing."""

    def __init__(
        self,
        ctx: PeerContext,
        counts: RefCounts | None,
        on_stale: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self._ctx = ctx
        #: called with a peer that answered StaleLayoutError (the layouts are exchanged)
        self._on_stale = on_stale
        #: this node's storage and counts (None on a gateway, which stores nothing)
        self._local = ctx.local
        self._counts = counts
        self._sends = trio.Semaphore(MAX_BACKGROUND_SENDS)
        #: One caller at a time collects its slots: callers that each held part of what
        #: they need could otherwise hold every slot between them and wait forever.
        self._collecting = trio.Lock()

    # -- the public calls ------------------------------------------------------------------

    async def update(
        self, nursery: trio.Nursery, hash: bytes, owner: str | bytes, *, deleted: bool
    ) -> None:
        """Add (``deleted=False``) or remove a reference; return at the write quorum.

        When the quorum fails because some node answered that the layouts differ, and
        this node learned a different set of live versions meanwhile (the exchange that
        follows such an answer), the update is sent once more to the new storage nodes
        (updates are idempotent).

        An add raises ``MissingBlockError`` (the reference is recorded all the same)
        when every storage node that acknowledged it said it holds no copy of the block.
        """
        h = as_hash(hash)
        entry: RefTuple = (bytes(h), owner_bytes(owner), deleted, self._ctx.clock.now_msec())
        live = self._ctx.live_layouts
        try:
            await self._update_once(nursery, h, entry)
        except QuorumError as exc:
            stale = any(isinstance(e, StaleLayoutError) for e in exc.errors.values())
            if not stale or self._ctx.live_layouts == live:
                raise
            await self._update_once(nursery, h, entry)

    async def _update_once(self, nursery: trio.Nursery, h: Hash, entry: RefTuple) -> None:
        ctx = self._ctx
        deleted = entry[2]
        groups = ctx.write_sets(h)
        targets = list(dict.fromkeys(n for nodes, _q in groups for n in nodes))
        verb = "remove" if deleted else "add"
        # Take a slot for every remote send before starting any: the sends that go on
        # after the quorum are bounded, and a caller waits here when they pile up.
        await self.take_slots(sum(1 for n in targets if n != ctx.node_id))
        #: node -> whether it said it lacks the block (None: it did not say)
        missing: dict[str, bool | None] = {}

        async def send(node: str) -> None:
            try:
                flags = await self.deliver(node, [entry], report=not deleted)
            finally:
                if node != ctx.node_id:
                    self.release_slot()
            missing[node] = None if flags is None else flags[0]

        await call_quorum(
            nursery,
            targets,
            ctx.layout.write_quorum,
            send,
            what=f"{verb} reference {entry[1]!r} to {h.short()}",
            groups=groups,
        )
        if not deleted and missing and all(v is True for v in missing.values()):
            raise MissingBlockError(h, missing_text(h, sorted(missing)))

    async def take_slots(self, n: int) -> None:
        """Take ``n`` background-send slots (waiting while others hold them); each is
        given back with :meth:`release_slot` when its send ends."""
        taken = 0
        try:
            async with self._collecting:
                while taken < n:
                    await self._sends.acquire()
                    taken += 1
        except BaseException:
            for _ in range(taken):
                self._sends.release()
            raise

    def release_slot(self) -> None:
        """Give back one slot taken with :meth:`take_slots`."""
        self._sends.release()

    async def deliver(
        self, node: str, entries: list[RefTuple], *, report: bool
    ) -> list[bool] | None:
        """Have ``node`` (this node included) merge ``entries``; with ``report``, one
        flag per entry: it left an alive reference there to a block that node holds
        no copy of (None: an older peer did not say). A peer that answers
        ``StaleLayoutError`` is tried once more after the layouts are exchanged."""
        ctx = self._ctx
        if node == ctx.node_id:
            if report:
                return await self.merge_reporting(entries)
            await self.merge(entries)
            return None
        if ctx.rpc is None:
            raise TransportError(f"no transport configured to reach node {node}")
        try:
            with trio.fail_after(ctx.config.rpc_timeout):
                return await ctx.rpc.ref_update(node, entries, background=False, report=report)
        except StaleLayoutError:
            if self._on_stale is None:
                raise
            # One of us has an older layout: exchange, then try once more.
            with trio.fail_after(ctx.config.rpc_timeout):
                await self._on_stale(node)
                return await ctx.rpc.ref_update(node, entries, background=False, report=report)

    def of_block(self, hash: bytes) -> list[Reference]:
        """This node's rows for ``hash``, tombstones included."""
        h = as_hash(hash)
        if self._local is None:
            return []
        return [Reference(o, s.deleted, s.ts) for o, s in self._local.db.refs.of_block(h)]

    # -- merging (local, and for peers) ------------------------------------------------------

    def is_storage_node(self, hash: bytes) -> bool:
        """Whether this node holds references of ``hash`` (any live layout version
        gives it a copy)."""
        return self._ctx.stores_in_live(self._ctx.node_id, hash)

    async def merge(
        self, entries: list[RefTuple], alive: dict[tuple[bytes, bytes], bool] | None = None
    ) -> int:
        """Merge entries into ``block_ref`` with their refcount changes; rows changed.

        ``alive``: filled with whether each entry's pair, ``(hash, owner)``, is alive
        once every entry is merged (a retried transaction sets the same values again)."""
        local, counts = self._local, self._counts
        if local is None or counts is None:
            raise TrioblockError(f"{self._ctx.node_id} is a gateway: it stores no references")
        db = local.db
        for entry in entries:
            check_tuple(entry)
            if not self.is_storage_node(entry[0]):
                raise StaleLayoutError(
                    f"{self._ctx.node_id} is not a storage node of {entry[0].hex()} in "
                    f"layout version(s) {self._live_versions()}"
                )

        def merge_chunk(tx: Transaction, chunk: list[RefTuple]) -> int:
            changed = 0
            for entry in chunk:
                delta, did_change, now_alive = db.refs.merge_in(tx, entry)
                changed += did_change
                if alive is not None:
                    alive[(bytes(entry[0]), bytes(entry[1]))] = now_alive
                if delta > 0:
                    counts.incref(Hash(entry[0]), tx)
                elif delta < 0:
                    counts.decref(Hash(entry[0]), tx)
                elif did_change and entry[2]:
                    # A tombstone for a pair this node never saw alive: no count
                    # changes, but a copy held here (a put that went through this node,
                    # an add that never reached it) may have no other way to go.
                    counts.unreferenced(Hash(entry[0]), tx)
            return changed

        changed = await _write_in_chunks(db, merge_chunk, entries)
        if changed:
            local.notify_resync()
        return changed

    async def merge_reporting(self, entries: list[RefTuple]) -> list[bool]:
        """:meth:`merge`, then one flag per entry: True when the entry is an add whose
        pair is alive here after the merge and this node holds no copy of its block
        (looked up in one worker-thread trip). A copy found here stays: its count is
        non-zero from the merge on, and the GC re-derives counts before deleting."""
        after: dict[tuple[bytes, bytes], bool] = {}
        await self.merge(entries, after)
        local = self._local
        assert local is not None  # merge refused a gateway
        alive = [not e[2] and after[(bytes(e[0]), bytes(e[1]))] for e in entries]
        wanted = sorted({Hash(e[0]) for e, a in zip(entries, alive, strict=True) if a})
        if not wanted:
            return [False] * len(entries)
        store = local.store
        found = await run_blocking(
            lambda: {h for h in wanted if store.find_sync(h) is not None}, limiter=store.limiter
        )
        return [a and Hash(e[0]) not in found for e, a in zip(entries, alive, strict=True)]

    async def collect(self, entries: list[RefTuple]) -> int:
        """Drop these tombstones (never an alive row, never a newer tombstone)."""
        if self._local is None:
            return 0
        db = self._local.db
        for entry in entries:
            check_tuple(entry)

        def collect_chunk(tx: Transaction, chunk: list[RefTuple]) -> int:
            return sum(db.refs.collect_in(tx, entry) for entry in chunk)

        return await _write_in_chunks(db, collect_chunk, entries)

    def _live_versions(self) -> str:
        return ", ".join(str(getattr(v, "version", "fixed")) for v in self._ctx.live_layouts)

    def shared_with(self, peer: str) -> Callable[[bytes], bool]:
        """A filter keeping the hashes that some live layout version gives us and some
        live version (the same or another) gives ``peer``: during a layout change a new
        storage node syncs with the old ones too."""
        ctx, me = self._ctx, self._ctx.node_id
        live = ctx.live_layouts
        if len(live) == 1 and len(live[0].nodes) <= live[0].replication_factor:
            return lambda _hash: True

        def keep(hash: bytes) -> bool:
            return ctx.stores_in_live(me, hash) and ctx.stores_in_live(peer, hash)

        return keep

    # -- RPC handlers ----------------------------------------------------------------------

    async def serve_update(self, peer: str, entries: list[RefTuple]) -> None:
        await self.merge(entries)

    async def serve_update_report(self, peer: str, entries: list[RefTuple]) -> list[bool]:
        return await self.merge_reporting(entries)

    async def serve_digests(self, peer: str, prefixes: list[bytes]) -> list[tuple[int, bytes]]:
        db = self._require_db()
        return await db.refs.digests(prefixes, self.shared_with(peer))

    async def serve_fetch(
        self, peer: str, prefix: bytes, after: bytes, limit: int
    ) -> tuple[list[RefTuple], bool]:
        db = self._require_db()
        return await db.refs.page(prefix, after, limit, self.shared_with(peer))

    async def serve_collect(self, peer: str, entries: list[RefTuple]) -> None:
        await self.collect(entries)

    def _require_db(self) -> MetadataDb:
        if self._local is None:
            raise TrioblockError(f"{self._ctx.node_id} is a gateway: it stores no references")
        return self._local.db


async def _write_in_chunks(
    db: MetadataDb,
    write_chunk: Callable[[Transaction, list[RefTuple]], int],
    entries: list[RefTuple],
) -> int:
    """Apply ``write_chunk`` to ``entries`` in transactions of :data:`MERGE_CHUNK`
    entries (the Trio thread yields between them); the sum of what it returned."""
    total = 0
    for start in range(0, len(entries), MERGE_CHUNK):
        chunk = entries[start : start + MERGE_CHUNK]

        def run(tx: Transaction, chunk: list[RefTuple] = chunk) -> int:
            return write_chunk(tx, chunk)

        total += await db.write(run)
    return total


def missing_text(h: Hash, nodes: list[str]) -> str:
    """The message of a ``MissingBlockError`` raised by an add whose block is gone."""
    return (
        f"block {h.hex()} is not held by any storage node that recorded the reference "
        f"({', '.join(nodes)}): it was never put, or was collected before the reference "
        "came; put it again (the reference stands)"
    )


__all__ = ["MAX_BACKGROUND_SENDS", "References", "missing_text"]
