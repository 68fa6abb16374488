"""The block manager's members for references: local reference counts and the cluster's
(hash, owner) references."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterable
from contextlib import AbstractContextManager

from .._core.hashing import Hash
from .._core.rcentry import RcEntry
from .._core.refcrdt import Reference
from .._storage import Transaction
from .background.refsync import SyncReport
from .context import as_hash
from .manager_base import ManagerBase


class ReferenceMembers(ManagerBase):
    """The reference members of :class:`BlockManager`."""

    # -- reference counts -------------------------------------------------------------------

    def transaction(self) -> AbstractContextManager[Transaction]:
        """A transaction on the node's database, for callers with their own tables.

        ``with bm.transaction() as tx: tx.execute(...); bm.incref(h, tx)`` commits the
        caller's rows and the reference change together. Do not ``await`` inside it:
        the connection is shared with the node's synchronous API.
        """
        return self._local().refs.transaction()

    def incref(self, hash: bytes, tx: Transaction | None = None) -> int:
        """Add a reference to a block; return the new count.

        When the count leaves zero, a resync check is queued in ``2 × rpc_timeout`` (in
        the same transaction) to fetch the block should it not arrive.
        """
        h = as_hash(hash)
        return self._local().refs.incref(h, tx)

    def decref(self, hash: bytes, tx: Transaction | None = None) -> int:
        """Drop a reference; return the new count.

        When it reaches zero the block becomes deletable after ``gc_delay``; the deletion
        check is queued for ``gc_delay + 10 s`` in the same transaction.
        """
        h = as_hash(hash)
        return self._local().refs.decref(h, tx)

    def get_block_rc(self, hash: bytes) -> int:
        """The local reference count of a block (0 when unreferenced)."""
        return self.get_rc_entry(hash).count

    def get_rc_entry(self, hash: bytes) -> RcEntry:
        """The block's row of the reference-count table: present, deletable or absent."""
        h = as_hash(hash)
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
        nursery = self._open()
        await self._references.update(nursery, hash, owner, deleted=False)

    async def remove_reference(self, hash: bytes, owner: str | bytes) -> None:
        """Remove ``owner``'s reference to ``hash`` on every storage node (a tombstone).

        Like :meth:`add_reference`. A removed reference never comes back; once no live
        reference remains, the block is deleted after ``gc_delay``.
        """
        nursery = self._open()
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
        nursery = self._open()
        return await self._app.update_many(nursery, pairs, deleted=False)

    async def remove_references(self, pairs: Iterable[tuple[bytes, str | bytes]]) -> int:
        """:meth:`remove_reference` for many ``(hash, owner)`` pairs in one call (async).

        Like :meth:`add_references` (a removal never raises ``MissingBlockError``).
        """
        nursery = self._open()
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
        nursery = self._open()
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
        return await self._local().ref_sync.sync_now()


__all__ = ["ReferenceMembers"]
