"""What a resync does with one block: the ``ResyncExecutor``.

The decision is ``_core/resync.py``'s (a pure function of: copy here?, reference count,
time, storage node?, when the copy was last written); the executor performs it:

- **fetch**: a referenced block this storage node lacks is read from the peers (hedged,
  verified) and written here;
- **offload and delete** (GC): the other storage nodes are asked whether they need the
  block (``NeedBlockQuery``) and sent it if they do; then, under the block's lock and
  with no await between the last check and the rename, the count is re-derived from
  ``block_ref`` (live references the count lacks are restored, and the block kept), the
  decision re-checked, and the file renamed away and unlinked;
- **clear**: a Deletable row with no copy left is dropped.

A storage node that cannot be asked or does not receive the block stops the deletion
with one :class:`DeletionDeferred` naming each node and its cause (logged once per
block; the resync retries with back-off).
"""

from __future__ import annotations

import logging

import trio

from .._core.hashing import Hash
from .._core.refcount import RcEntry
from .._core.resync import ResyncAction, decide_resync, offload_allowed
from ..errors import CorruptBlockError, MissingBlockError, TransportError, TrioblockError
from .context import NodeContext, describe
from .reads import Reader
from .writes import Writer

log = logging.getLogger("trioblock.resync")


class DeletionDeferred(TrioblockError):
    """An unreferenced block is kept for now (a storage node could not be asked or
    could not receive it); the resync retries with back-off."""


class ResyncExecutor:
    """What a resync does with one block (decided by ``_core/resync.py``)."""

    def __init__(self, ctx: NodeContext, reader: Reader, writer: Writer) -> None:
        self._ctx = ctx
        self._reader = reader
        self._writer = writer
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
            await ctx.db.clear_deleted_rc(hash, now)
            return None
        if action is ResyncAction.FETCH:
            await self._fetch_missing(hash)
            return None
        try:
            retry_at = await self._offload_and_delete(hash)
        except DeletionDeferred as exc:
            if hash not in self._deferral_logged:
                self._deferral_logged.add(hash)
                log.warning("%s: %s (retrying with back-off)", ctx.node_id, exc)
            raise
        self._deferral_logged.discard(hash)
        return retry_at

    async def _fetch_missing(self, hash: Hash) -> None:
        ctx = self._ctx
        log.info("resync %s: referenced but absent, fetching from peers", hash.short())
        if not ctx.peers_for_read(hash) or ctx.rpc is None:
            raise MissingBlockError(
                hash, f"block {hash.hex()} is referenced but absent and no peer can provide it"
            )
        await self._reader.fetch_and_store(hash)
        ctx.metrics.resync_received += 1

    async def _offload_and_delete(self, hash: Hash) -> int | None:
        ctx = self._ctx
        storage = ctx.layout.storage_nodes(hash)
        if not offload_allowed(len(storage), ctx.layout.write_quorum):
            raise DeletionDeferred(
                f"not deleting {hash.hex()}: {len(storage)} storage nodes known, "
                f"write quorum is {ctx.layout.write_quorum}"
            )
        others = [n for n in storage if n != ctx.node_id]
        if others:
            await self._offload(hash, others)
        async with ctx.store.locks.hold(hash):
            loc = await ctx.store.find(hash)
            now = ctx.clock.now_msec()
            if loc is None:
                # Gone meanwhile (or quarantined while offloading): only the row is left.
                await ctx.db.clear_deleted_rc(hash, now)
                return None
            # Wait until no other task holds a transaction open; from here to the rename
            # nothing awaits: an incref cannot slip in between, and the recount's
            # write cannot find the database busy.
            await ctx.db.wait_turn()
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
                return recheck.retry_at
            if recheck.action is not ResyncAction.OFFLOAD_AND_DELETE:
                return None
            trash = ctx.store.detach_now(loc)
            if trash is None:
                return None
            await ctx.store.discard(trash)
        ctx.metrics.deletes += 1
        await ctx.db.clear_deleted_rc(hash, now)
        log.info("%s: deleted unreferenced block %s", ctx.node_id, hash.short())
        return None

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

    async def _offload(self, hash: Hash, others: list[str]) -> None:
        """Send the block to the storage nodes that still need it.

        ``DeletionDeferred`` (one error naming each node and its cause) when a node
        cannot be asked or does not receive it. Holds no lock: a corrupt copy found
        here is quarantined by the store (under the block's lock) and counted.
        """
        ctx = self._ctx
        rpc = ctx.rpc
        if rpc is None:
            raise TransportError("no transport configured to reach the other storage nodes")
        needs: dict[str, bool] = {}
        failures: dict[str, BaseException] = {}

        async def ask(node: str) -> None:
            try:
                with trio.fail_after(ctx.config.need_block_query_timeout):
                    needs[node] = await rpc.need_block(node, hash, background=True)
            except Exception as exc:  # that node's failure: reported below, in one error
                failures[node] = exc

        async with trio.open_nursery() as nursery:
            for node in others:
                nursery.start_soon(ask, node)
        if failures:
            raise DeletionDeferred(
                f"not deleting {hash.hex()} yet: cannot ask "
                + "; ".join(f"{n} ({_cause(e)})" for n, e in sorted(failures.items()))
                + " whether it is needed"
            )
        needing = [n for n, needed in needs.items() if needed]
        if not needing:
            return
        try:
            found = await ctx.store.read_verified(hash)
        except CorruptBlockError:
            ctx.metrics.corruptions += 1
            log.warning(
                "%s: unreferenced block %s is corrupt: quarantined, not offloaded",
                ctx.node_id,
                hash.short(),
            )
            return
        if found is None:
            return
        _plaintext, block, _loc = found

        async def send(node: str) -> None:
            try:
                await self._writer.send_one(node, hash, block, True)
            except Exception as exc:  # reported below, in one error
                failures[node] = exc

        # One bytes object goes to every node: counted once in the budget.
        async with ctx.budget.hold(len(block)), trio.open_nursery() as nursery:
            for node in needing:
                nursery.start_soon(send, node)
        sent = [n for n in needing if n not in failures]
        ctx.metrics.resync_sent += len(sent)
        if failures:
            raise DeletionDeferred(
                f"not deleting {hash.hex()} yet: could not send it to "
                + "; ".join(f"{n} ({_cause(e)})" for n, e in sorted(failures.items()))
            )
        log.info(
            "%s: offloaded %s to %s before deleting", ctx.node_id, hash.short(), ", ".join(needing)
        )


def _cause(exc: BaseException) -> str:
    if isinstance(exc, trio.TooSlowError):
        return "no answer in time"
    return describe(exc)


__all__ = ["DeletionDeferred", "ResyncExecutor"]
