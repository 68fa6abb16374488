"""The calls an application makes in bulk: batched references, which blocks the cluster
lacks, and references by owner.

- ``update_many`` (``add_references`` / ``remove_references``): the pairs are stamped
  with one timestamp, grouped per storage node (every live layout version's storage
  nodes of each pair's hash) and sent as one ``RefUpdate`` per node (per 4096 entries).
  Each pair keeps the quorum rule of a single update: ``write_quorum`` in every live
  version. The call returns once every pair is settled (its quorums reached, or out of
  reach); the sends still running go on in the node's nursery, bounded like single
  updates. An add whose acknowledging nodes all said they hold no copy of the block
  fails with ``MissingBlockError``. Failed pairs are listed in one
  ``ReferenceBatchError``.
- ``missing_blocks``: one ``BlocksHeldQuery`` per storage node of the current layout
  version (per 1024 hashes); a block counts as held only when at least ``write_quorum``
  of its storage nodes hold a copy, so a deduplicating writer re-puts a block whose
  copies fell below the quorum and the quorum is restored.
- ``owned_by`` / ``remove_owner``: every storage node of a live version is asked for
  its rows of the owner (``OwnedQuery``, through its owner index), page by page in hash
  order; the pages are merged so that each hash comes once, and a hash any node holds a
  tombstone for is left out (deleted wins).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Iterable
from dataclasses import dataclass, field

import trio

from .._core.hashing import Hash
from .._core.refcrdt import RefTuple, owner_bytes
from .._storage.threads import run_blocking
from ..errors import (
    MissingBlockError,
    QuorumError,
    ReferenceBatchError,
    TransportError,
    TrioblockError,
)
from .context import PeerContext, as_hash
from .refupdates import References, missing_text

log = logging.getLogger("trioblock.refs")

#: Entries in one ``RefUpdate`` (the message's limit).
BATCH_ENTRIES = 4096
#: Pairs sent at once; a larger batch goes in parts of this size, one after the other
#: (each part's messages hold background-send slots, of which there are 1024).
SUB_BATCH = 16384
#: Rows asked per node and page by ``owned_by``.
OWNED_PAGE = 1024
#: Pairs removed per batch by ``remove_owner``.
REMOVE_OWNER_BATCH = 1024


@dataclass(slots=True)
class _Pair:
    """One pair of a batch: where it must go and what came back."""

    entry: RefTuple
    groups: list[tuple[list[str], int]]
    ok: set[str] = field(default_factory=set)
    #: node -> it said it lacks the block (None: it did not say)
    missing: dict[str, bool | None] = field(default_factory=dict)
    errors: dict[str, BaseException] = field(default_factory=dict)
    settled: bool = False

    def reached(self) -> bool:
        return all(len(self.ok.intersection(nodes)) >= q for nodes, q in self.groups)

    def hopeless(self) -> bool:
        return any(
            len(nodes) - sum(1 for n in nodes if n in self.errors) < q for nodes, q in self.groups
        )


class AppCalls:
    """Batched references, ``missing_blocks`` and references by owner, for one node."""

    def __init__(self, ctx: PeerContext, references: References) -> None:
        self._ctx = ctx
        self._refs = references
        self._local = ctx.local

    # -- batched references --------------------------------------------------------------

    async def update_many(
        self,
        nursery: trio.Nursery,
        pairs: Iterable[tuple[bytes, str | bytes]],
        *,
        deleted: bool,
    ) -> int:
        """Add or remove every pair; return how many pairs there were (each once).

        ``ReferenceBatchError`` listing the pairs that failed, each with its error.
        """
        ctx = self._ctx
        ts = ctx.clock.now_msec()
        entries: dict[tuple[bytes, bytes], RefTuple] = {}
        for hash, owner in pairs:
            h = bytes(as_hash(hash))
            o = owner_bytes(owner)
            entries[(h, o)] = (h, o, deleted, ts)
        ctx.require_open()
        verb = "remove" if deleted else "add"
        values = list(entries.values())
        failed: dict[tuple[bytes, bytes], TrioblockError] = {}
        for start in range(0, len(values), SUB_BATCH):
            failed.update(await self._update_part(nursery, values[start : start + SUB_BATCH]))
        if failed:
            raise ReferenceBatchError(
                f"{verb}_references", failed=failed, succeeded=len(values) - len(failed)
            )
        return len(values)

    async def _update_part(
        self, nursery: trio.Nursery, entries: list[RefTuple]
    ) -> dict[tuple[bytes, bytes], TrioblockError]:
        """Send one part of a batch (at most :data:`SUB_BATCH` pairs, so that its sends
        never need more background slots than there are); the pairs that failed."""
        ctx = self._ctx
        deleted = entries[0][2]
        batch = [_Pair(e, ctx.write_sets(Hash(e[0]))) for e in entries]
        per_node: dict[str, list[int]] = {}
        for index, pair in enumerate(batch):
            for node in dict.fromkeys(n for nodes, _q in pair.groups for n in nodes):
                per_node.setdefault(node, []).append(index)
        chunks = [
            (node, indexes[start : start + BATCH_ENTRIES])
            for node, indexes in per_node.items()
            for start in range(0, len(indexes), BATCH_ENTRIES)
        ]
        await self._refs.take_slots(sum(1 for node, _i in chunks if node != ctx.node_id))
        await self._send_chunks(nursery, batch, chunks, deleted)
        verb = "remove" if deleted else "add"
        failed: dict[tuple[bytes, bytes], TrioblockError] = {}
        for pair in batch:
            h, o = Hash(pair.entry[0]), pair.entry[1]
            if not pair.reached():
                failed[(bytes(h), o)] = QuorumError(
                    f"{verb} reference {o!r} to {h.short()} could not be written to a quorum"
                    + ("" if len(pair.groups) == 1 else " in every live layout version"),
                    quorum=pair.groups[0][1],
                    successes=len(pair.ok.intersection(pair.groups[0][0])),
                    errors=dict(pair.errors),
                )
            elif not deleted and pair.missing and all(v is True for v in pair.missing.values()):
                failed[(bytes(h), o)] = MissingBlockError(h, missing_text(h, sorted(pair.ok)))
        return failed

    async def _send_chunks(
        self,
        nursery: trio.Nursery,
        batch: list[_Pair],
        chunks: list[tuple[str, list[int]]],
        deleted: bool,
    ) -> None:
        """Send every chunk in ``nursery``; return once every pair is settled (the
        remaining sends go on). Each chunk's remote slot is released when it ends."""
        ctx = self._ctx
        done = trio.Event()
        state = {"unsettled": len(batch), "pending": len(chunks)}

        def settle(indexes: list[int]) -> None:
            for i in indexes:
                pair = batch[i]
                if not pair.settled and (pair.reached() or pair.hopeless()):
                    pair.settled = True
                    state["unsettled"] -= 1
            if state["unsettled"] == 0 or state["pending"] == 0:
                done.set()

        async def send(node: str, indexes: list[int]) -> None:
            try:
                flags = await self._refs.deliver(
                    node, [batch[i].entry for i in indexes], report=not deleted
                )
            except Exception as exc:  # recorded per pair, reported in ReferenceBatchError
                log.debug("reference batch to %s failed: %r", node, exc)
                for i in indexes:
                    batch[i].errors[node] = exc
            else:
                for k, i in enumerate(indexes):
                    batch[i].ok.add(node)
                    batch[i].missing[node] = None if flags is None else flags[k]
            finally:
                if node != ctx.node_id:
                    self._refs.release_slot()
                state["pending"] -= 1
                settle(indexes)

        for position, (node, indexes) in enumerate(chunks):
            try:
                nursery.start_soon(send, node, indexes)
            except RuntimeError as exc:  # the node is closing: these sends never start
                for unsent, unsent_indexes in chunks[position:]:
                    if unsent != ctx.node_id:
                        self._refs.release_slot()
                    for i in unsent_indexes:
                        batch[i].errors[unsent] = exc
                    state["pending"] -= 1
                settle(list(range(len(batch))))
                break
        await done.wait()

    # -- which blocks the cluster lacks ---------------------------------------------------

    async def missing_blocks(self, hashes: Iterable[bytes]) -> set[Hash]:
        """The hashes of which fewer than ``write_quorum`` storage nodes of the current
        layout version hold a copy (a node that cannot be asked holds none)."""
        ctx = self._ctx
        wanted = list(dict.fromkeys(as_hash(h) for h in hashes))
        layout = ctx.layout
        per_node: dict[str, list[Hash]] = {}
        for h in wanted:
            for node in layout.storage_nodes(h):
                per_node.setdefault(node, []).append(h)
        held: dict[Hash, int] = dict.fromkeys(wanted, 0)

        async def ask(node: str, asked: list[Hash]) -> None:
            try:
                answers = await self._held_on(node, asked)
            except Exception as exc:  # a node that cannot say holds nothing, for safety
                log.debug("%s: missing_blocks: %s could not be asked: %r", ctx.node_id, node, exc)
                return
            for h, yes in zip(asked, answers, strict=True):
                held[h] += yes

        async with trio.open_nursery() as nursery:
            for node, asked in per_node.items():
                nursery.start_soon(ask, node, asked)
        quorum = layout.write_quorum
        return {h for h, n in held.items() if n < quorum}

    async def _held_on(self, node: str, hashes: list[Hash]) -> list[bool]:
        ctx = self._ctx
        if node == ctx.node_id and self._local is not None:
            store = self._local.store
            return await run_blocking(
                lambda: [store.find_sync(h) is not None for h in hashes], limiter=store.limiter
            )
        if ctx.rpc is None:
            raise TransportError(f"no transport configured to reach node {node}")
        per_request = ctx.config.rpc_timeout
        with trio.fail_after(per_request * (1 + len(hashes) // 1024)):
            return await ctx.rpc.blocks_held(node, hashes, timeout=per_request)

    # -- references by owner ---------------------------------------------------------------

    async def owned_by(self, owner: str | bytes) -> AsyncGenerator[Hash, None]:
        """The hashes the cluster holds an alive reference of ``owner`` for, in hash
        order, each once; a hash some node holds a tombstone of the pair for is left
        out. ``QuorumError`` when more storage nodes could not be asked than a
        reference's write quorum tolerates (the listing could miss references)."""
        ctx = self._ctx
        o = owner_bytes(owner)
        ctx.require_open()
        nodes = ctx.live_nodes()
        tolerated = min(v.replication_factor - v.write_quorum for v in ctx.live_layouts)
        failed: dict[str, BaseException] = {}
        active = list(nodes)
        cursor = b""
        while True:
            pages = await self._owned_round(active, o, cursor, failed)
            if len(failed) > tolerated:
                raise QuorumError(
                    f"owned_by {o!r}: {len(failed)} storage node(s) could not be asked "
                    f"(at most {tolerated} may be missing for a complete listing)",
                    quorum=len(nodes) - tolerated,
                    successes=len(nodes) - len(failed),
                    errors=dict(failed),
                )
            # Every node covered the hashes up to the lowest last hash of a node that
            # has more: those are complete this round.
            bounds = [rows[-1][0] for rows, more in pages.values() if more and rows]
            bound = min(bounds) if bounds else None
            alive: dict[Hash, bool] = {}
            for rows, _more in pages.values():
                for h, is_deleted in rows:
                    if bound is not None and h > bound:
                        break
                    alive[h] = alive.get(h, True) and not is_deleted
            for h in sorted(alive):
                if alive[h]:
                    yield h
            if bound is None:
                return
            cursor = bytes(bound)
            active = [
                node
                for node, (rows, more) in pages.items()
                if more or (rows and rows[-1][0] > bound)
            ]

    async def _owned_round(
        self, nodes: list[str], owner: bytes, after: bytes, failed: dict[str, BaseException]
    ) -> dict[str, tuple[list[tuple[Hash, bool]], bool]]:
        """One page of ``owner``'s rows after ``after`` from each node, asked at once;
        the nodes that failed go into ``failed``."""
        pages: dict[str, tuple[list[tuple[Hash, bool]], bool]] = {}

        async def ask(node: str) -> None:
            try:
                pages[node] = await self._owned_page(node, owner, after)
            except Exception as exc:  # counted against what a listing tolerates
                failed[node] = exc

        async with trio.open_nursery() as nursery:
            for node in nodes:
                nursery.start_soon(ask, node)
        return pages

    async def _owned_page(
        self, node: str, owner: bytes, after: bytes
    ) -> tuple[list[tuple[Hash, bool]], bool]:
        ctx = self._ctx
        if node == ctx.node_id and self._local is not None:
            rows, more = await self._local.db.refs.owned(owner, after, OWNED_PAGE)
            return [(Hash(r[0]), r[2]) for r in rows], more
        if ctx.rpc is None:
            raise TransportError(f"no transport configured to reach node {node}")
        with trio.fail_after(ctx.config.rpc_timeout):
            return await ctx.rpc.owned(node, owner, after, OWNED_PAGE)

    async def remove_owner(self, nursery: trio.Nursery, owner: str | bytes) -> int:
        """Remove every reference of ``owner`` that :meth:`owned_by` lists; the count.

        ``ReferenceBatchError`` (its ``succeeded`` counting every pair removed so far)
        when some could not be removed; ``QuorumError`` when the listing failed."""
        o = owner_bytes(owner)
        removed = 0
        batch: list[Hash] = []

        async def flush() -> None:
            nonlocal removed
            try:
                removed += await self.update_many(nursery, [(h, o) for h in batch], deleted=True)
            except ReferenceBatchError as exc:
                raise ReferenceBatchError(
                    f"remove_owner({o!r})", failed=exc.failed, succeeded=removed + exc.succeeded
                ) from None
            batch.clear()

        listing = self.owned_by(o)
        try:
            async for h in listing:
                batch.append(h)
                if len(batch) >= REMOVE_OWNER_BATCH:
                    await flush()
        finally:
            await listing.aclose()
        if batch:
            await flush()
        return removed


__all__ = ["AppCalls"]
