"""The node's metadata: ``<metadata_dir>/trioblock.sqlite``.

Key/value tables, keys and values as BLOBs, keys ordered (WITHOUT ROWID):

======================  =========================  =====================================
table                   key                        value
======================  =========================  =====================================
``block_rc``            hash (32 B)                ``RcEntry`` encoding
``resync_queue``        ``be64(when) ‖ hash``      hash
``resync_errors``       hash                       ``ErrorCounter`` encoding
``block_ref``           ``hash ‖ owner``           ``u8(deleted) ‖ be64(ts)``
``settings``            name (TEXT)                CBOR value
======================  =========================  =====================================

Rules kept here (connections and transactions: see ``database.py``):

- A reference-count change and the resync entry it implies are written in the same
  transaction.
- A queue entry is only ever removed in the transaction that writes its successor, so a
  crash never loses pending work (a duplicate entry is harmless). A queue entry's value
  is its key's hash, so inserting an existing entry changes nothing.
- Clearing a block's back-off keeps its error count (the history, and the growth of the
  next back-off), as Garage's ``clear_backoff`` does.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cbor2

from .._core.hashing import Hash
from .._core.rcentry import ErrorCounter, RcEntry, parse_queue_key, queue_key
from .database import DB_NAME, Database, Transaction, sql_errors
from .queuerows import (
    clear_deleted_rc,
    key_bound,
    queue_drop,
    queue_put,
    resync_done_many,
    resync_failed,
)
from .reftable import RefTable
from .walflush import Fsync


@dataclass(frozen=True, slots=True)
class ResyncErrorInfo:
    """A block whose resync keeps failing (``list_resync_errors``).

    Times are msec on the node's clock; ``next_try`` is when the back-off ends.
    """

    hash: Hash
    refcount: int
    error_count: int
    last_try: int
    next_try: int


class MetadataDb(Database):
    """Every statement trioblock runs on the rc, queue, error and settings tables."""

    def __init__(
        self, metadata_dir: Path, *, fsync: bool = True, fsync_file: Fsync = os.fsync
    ) -> None:
        super().__init__(metadata_dir, fsync=fsync, fsync_file=fsync_file)
        self.refs = RefTable(self)

    # -- reference counts (synchronous, Trio thread) -----------------------------------------

    def get_rc(self, hash: bytes) -> RcEntry:
        row = self.read_one("SELECT value FROM block_rc WHERE key=?", (bytes(hash),))
        return RcEntry.decode(row[0] if row else None)

    def get_rc_in(self, tx: Transaction, hash: bytes) -> RcEntry:
        row = tx.execute("SELECT value FROM block_rc WHERE key=?", (bytes(hash),)).fetchone()
        return RcEntry.decode(row[0] if row else None)

    def set_rc(self, tx: Transaction, hash: bytes, old: RcEntry, new: RcEntry) -> None:
        value = new.encode()
        if value is None:
            tx.execute("DELETE FROM block_rc WHERE key=?", (bytes(hash),))
        else:
            tx.execute("INSERT OR REPLACE INTO block_rc VALUES (?, ?)", (bytes(hash), value))
        tx.count("block_rc", (value is not None) - (old.encode() is not None))

    def incref(
        self, hash: bytes, *, now_msec: int, resync_at: int, tx: Transaction | None = None
    ) -> tuple[RcEntry, bool]:
        """Add a reference; queue a resync check when the block just became referenced.

        Returns the new entry and whether a queue entry was written.
        """
        with self.use(tx) as t, sql_errors("incref"):
            old = self.get_rc_in(t, hash)
            new = old.incref()
            self.set_rc(t, hash, old, new)
            queued = not old.is_nonzero
            if queued:
                queue_put(t, hash, resync_at)
        return new, queued

    def decref(
        self,
        hash: bytes,
        *,
        now_msec: int,
        gc_delay_msec: int,
        resync_delay_msec: int,
        tx: Transaction | None = None,
    ) -> tuple[RcEntry, bool]:
        """Drop a reference; when the count reaches zero, queue the deletion check."""
        with self.use(tx) as t, sql_errors("decref"):
            old = self.get_rc_in(t, hash)
            new = old.decref(now_msec, gc_delay_msec)
            if new == old:
                return new, False
            self.set_rc(t, hash, old, new)
            queued = not new.is_nonzero
            if queued:
                queue_put(t, hash, now_msec + resync_delay_msec)
        return new, queued

    def queue_if_absent(self, hash: bytes, *, when_msec: int, tx: Transaction) -> bool:
        """Queue a resync check of ``hash`` at ``when_msec`` when it has no count row (no
        live reference counted, no deletion already pending); whether it did."""
        with sql_errors("queue check"):
            if not self.get_rc_in(tx, hash).is_absent:
                return False
            queue_put(tx, hash, when_msec)
        return True

    def raise_rc_to(self, hash: bytes, count: int) -> RcEntry:
        """Make the count at least ``count`` (a recount found more live references)."""
        with self.transaction() as tx, sql_errors("recount"):
            old = self.get_rc_in(tx, hash)
            if old.count >= count:
                return old
            new = RcEntry.present(count)
            self.set_rc(tx, hash, old, new)
            return new

    # -- counts and listings -----------------------------------------------------------------

    def rc_len(self) -> int:
        return self.count("block_rc")

    def resync_queue_len(self) -> int:
        return self.count("resync_queue")

    def resync_errors_len(self) -> int:
        return self.count("resync_errors")

    def list_resync_errors(self, retry_delay_msec: int) -> list[ResyncErrorInfo]:
        rows = self.read_all(
            "SELECT e.key, e.value, r.value FROM resync_errors e "
            "LEFT JOIN block_rc r ON r.key = e.key ORDER BY e.key"
        )
        out = []
        for key, value, rc in rows:
            counter = ErrorCounter.decode(value)
            out.append(
                ResyncErrorInfo(
                    Hash(key),
                    RcEntry.decode(rc).count,
                    counter.errors,
                    counter.last_try,
                    counter.next_try(retry_delay_msec),
                )
            )
        return out

    def get_error(self, hash: bytes) -> ErrorCounter | None:
        row = self.read_one("SELECT value FROM resync_errors WHERE key=?", (bytes(hash),))
        return ErrorCounter.decode(row[0]) if row else None

    # -- operator actions (synchronous) ------------------------------------------------------

    def _clear_backoff(self, tx: Transaction, hash: bytes) -> bool:
        row = tx.execute("SELECT value FROM resync_errors WHERE key=?", (bytes(hash),)).fetchone()
        if row is None:
            return False
        cleared = ErrorCounter(ErrorCounter.decode(row[0]).errors, 0)
        tx.execute("UPDATE resync_errors SET value=? WHERE key=?", (cleared.encode(), bytes(hash)))
        return True

    def retry_now(self, hash: bytes, now_msec: int) -> bool:
        """Clear a block's back-off (keeping its error count) and queue it now.

        Returns False if it had no error.
        """
        with self.transaction() as tx, sql_errors("retry_now"):
            had_error = self._clear_backoff(tx, hash)
            queue_put(tx, hash, now_msec)
        return had_error

    def retry_all_now(self, now_msec: int) -> int:
        with self.transaction() as tx, sql_errors("retry_all_now"):
            return self.retry_all_in(tx, now_msec)

    def retry_all_in(self, tx: Transaction, now_msec: int) -> int:
        """:meth:`retry_now` for every block with a resync error, in ``tx``; how many."""
        hashes = [r[0] for r in tx.execute("SELECT key FROM resync_errors").fetchall()]
        for h in hashes:
            self._clear_backoff(tx, h)
            queue_put(tx, h, now_msec)
        return len(hashes)

    def purge(self, hash: bytes) -> None:
        """Forget a block entirely: reference count, error counter and queue entries."""
        h = bytes(hash)
        with self.transaction() as tx, sql_errors("purge"):
            tx.count("block_rc", -tx.execute("DELETE FROM block_rc WHERE key=?", (h,)).rowcount)
            cur = tx.execute("DELETE FROM resync_errors WHERE key=?", (h,))
            tx.count("resync_errors", -cur.rowcount)
            cur = tx.execute("DELETE FROM resync_queue WHERE value=?", (h,))
            tx.count("resync_queue", -cur.rowcount)

    # -- settings --------------------------------------------------------------------------------

    def get_setting(self, name: str, default: Any = None) -> Any:
        row = self.read_one("SELECT value FROM settings WHERE key=?", (name,))
        return default if row is None else cbor2.loads(row[0])

    def set_setting(self, name: str, value: Any) -> None:
        with self.transaction() as tx, sql_errors("settings"):
            tx.execute("INSERT OR REPLACE INTO settings VALUES (?, ?)", (name, cbor2.dumps(value)))

    async def save_setting(self, name: str, value: Any) -> None:
        """:meth:`set_setting` for background tasks: waits for its turn to write."""
        await self.write(
            lambda tx: tx.execute(
                "INSERT OR REPLACE INTO settings VALUES (?, ?)", (name, cbor2.dumps(value))
            )
        )

    # -- the resync queue (asynchronous: background workers) ---------------------------------

    def queue_head(self, limit: int, due_by_msec: int | None = None) -> list[tuple[bytes, Hash]]:
        """The first ``limit`` queue entries (key, hash), earliest first; with
        ``due_by_msec``, only entries due by then."""
        if due_by_msec is None:
            rows = self.read_all(
                "SELECT key, value FROM resync_queue ORDER BY key LIMIT ?", (limit,)
            )
        else:
            rows = self.read_all(
                "SELECT key, value FROM resync_queue WHERE key < ? ORDER BY key LIMIT ?",
                (key_bound(due_by_msec + 1), limit),
            )
        return [(bytes(k), Hash(v)) for k, v in rows]

    def queue_next_after(self, msec: int) -> int | None:
        """When the first entry due after ``msec`` is due (None when there is none)."""
        row = self.read_one(
            "SELECT key FROM resync_queue WHERE key >= ? ORDER BY key LIMIT 1",
            (key_bound(msec + 1),),
        )
        return None if row is None else parse_queue_key(bytes(row[0]))[0]

    async def queue_put(self, hash: bytes, when_msec: int) -> None:
        await self.write(lambda tx: queue_put(tx, hash, when_msec))

    async def queue_put_many(self, hashes: list[bytes], when_msec: int) -> None:
        def run(tx: Transaction) -> None:
            for h in hashes:
                queue_put(tx, h, when_msec)

        await self.write(run)

    async def queue_unqueued(
        self, hashes: list[bytes], when_msec: int, *, due_by_msec: int | None = None
    ) -> int:
        """Queue each hash that has neither a queue entry nor an error counter; with
        ``due_by_msec``, an entry due only later does not count (the hash is queued at
        ``when_msec`` too: duplicates are harmless)."""
        later = None if due_by_msec is None else (due_by_msec + 1).to_bytes(8, "big")

        def run(tx: Transaction) -> int:
            added = 0
            for h in hashes:
                if later is None:
                    queued = tx.execute(
                        "SELECT 1 FROM resync_queue WHERE value=? LIMIT 1", (bytes(h),)
                    ).fetchone()
                else:
                    queued = tx.execute(
                        "SELECT 1 FROM resync_queue WHERE value=? AND key<? LIMIT 1",
                        (bytes(h), later),
                    ).fetchone()
                erred = tx.execute(
                    "SELECT 1 FROM resync_errors WHERE key=?", (bytes(h),)
                ).fetchone()
                if queued is None and erred is None:
                    queue_put(tx, h, when_msec)
                    added += 1
            return added

        return await self.write(run)

    async def queue_move(self, old_key: bytes, hash: bytes, when_msec: int) -> None:
        """Reschedule an entry: write the new one, then drop the old (one transaction)."""

        def run(tx: Transaction) -> None:
            queue_put(tx, hash, when_msec)
            if queue_key(when_msec, hash) != old_key:
                queue_drop(tx, old_key)

        await self.write(run)

    async def resync_succeeded(self, key: bytes, hash: bytes) -> None:
        """A resync of ``hash`` succeeded: clear its error counter and its queue entry."""
        await self.resync_succeeded_many([(key, hash)])

    async def resync_succeeded_many(self, entries: list[tuple[bytes, bytes]]) -> None:
        """:meth:`resync_succeeded` for many ``(key, hash)`` entries, in one transaction
        (the resync worker's batch of checks that found nothing to do)."""
        if entries:
            await self.write(lambda tx: resync_done_many(tx, entries))

    async def resync_failed(
        self, key: bytes, hash: bytes, now_msec: int, retry_delay_msec: int
    ) -> ErrorCounter:
        """Count a failure and requeue at the back-off time, in one transaction."""

        return await self.write(lambda tx: resync_failed(tx, key, hash, now_msec, retry_delay_msec))

    async def clear_deleted_rc(self, hash: bytes, now_msec: int) -> bool:
        """Drop a Deletable row whose time has passed (never a Present one)."""
        return await self.write(lambda tx: clear_deleted_rc(tx, hash, now_msec))

    async def clear_deleted_rc_many(self, hashes: Sequence[bytes], now_msec: int) -> int:
        """:meth:`clear_deleted_rc` for many blocks, in one transaction; how many went."""
        if not hashes:
            return 0
        return await self.write(lambda tx: sum(clear_deleted_rc(tx, h, now_msec) for h in hashes))

    async def rc_hashes(self, after: bytes, limit: int, *, referenced: bool = False) -> list[Hash]:
        """Up to ``limit`` hashes of the rc table after ``after`` (only counts > 0 if
        ``referenced``), read in a worker thread."""
        sql = "SELECT key FROM block_rc WHERE key > ?"
        if referenced:
            sql += " AND length(value) = 8"
        sql += " ORDER BY key LIMIT ?"

        def run(conn: sqlite3.Connection) -> list[Hash]:
            return [Hash(r[0]) for r in conn.execute(sql, (after, limit)).fetchall()]

        return await self.scan(run)


__all__ = [
    "DB_NAME",
    "MetadataDb",
    "ResyncErrorInfo",
    "Transaction",
    "parse_queue_key",
]
