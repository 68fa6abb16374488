"""The rows of the resync queue and of the counts, as the resync workers change them.

The statements run inside a caller's transaction (``Transaction``): ``MetadataDb``
uses them for its single-block operations, and the batch writes below (a worker's
batch of settled, deferred or deleted entries) use them for many blocks at once, in one
transaction each. The rules are ``metadata``'s: a queue entry is only removed in the
transaction that writes its successor, and a count row is only dropped while it is
Deletable.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .._core.hashing import Hash
from .._core.rcentry import ErrorCounter, RcEntry, queue_key
from .database import Database, Transaction


def key_bound(when_msec: int) -> bytes:
    """The smallest queue key due at ``when_msec``: keys of entries due earlier sort
    below it, all others at or above it."""
    return queue_key(when_msec, b"")


def queue_put(tx: Transaction, hash: bytes, when_msec: int) -> None:
    """Queue a check of ``hash`` at ``when_msec`` (nothing when that entry exists)."""
    cur = tx.execute(
        "INSERT OR IGNORE INTO resync_queue VALUES (?, ?)",
        (queue_key(when_msec, hash), bytes(hash)),
    )
    tx.count("resync_queue", cur.rowcount)


def queue_drop(tx: Transaction, key: bytes) -> None:
    """Remove the queue entry ``key`` (its successor must be written already)."""
    cur = tx.execute("DELETE FROM resync_queue WHERE key=?", (key,))
    tx.count("resync_queue", -cur.rowcount)


def resync_done_many(tx: Transaction, entries: list[tuple[bytes, bytes]]) -> None:
    """Drop settled ``(key, hash)`` entries with their blocks' error counters."""
    for key, hash in entries:
        cur = tx.execute("DELETE FROM resync_errors WHERE key=?", (bytes(hash),))
        tx.count("resync_errors", -cur.rowcount)
        queue_drop(tx, key)


def resync_failed(
    tx: Transaction, key: bytes, hash: bytes, now_msec: int, retry_delay_msec: int
) -> ErrorCounter:
    """Count a failed resync of ``hash`` and requeue it at the back-off time."""
    row = tx.execute("SELECT value FROM resync_errors WHERE key=?", (bytes(hash),)).fetchone()
    counter = ErrorCounter.decode(row[0]).bump(now_msec) if row else ErrorCounter.first(now_msec)
    tx.execute(
        "INSERT OR REPLACE INTO resync_errors VALUES (?, ?)", (bytes(hash), counter.encode())
    )
    tx.count("resync_errors", 0 if row else 1)
    when = max(counter.next_try(retry_delay_msec), now_msec + 1)
    queue_put(tx, hash, when)
    if queue_key(when, hash) != key:
        queue_drop(tx, key)
    return counter


def clear_deleted_rc(tx: Transaction, hash: bytes, now_msec: int) -> bool:
    """Drop the count row of ``hash`` if it is Deletable (never a Present one)."""
    cur = tx.execute(
        "DELETE FROM block_rc WHERE key=? AND length(value)=16 AND value < ?",
        (bytes(hash), RcEntry.deletable(now_msec).encode()),
    )
    tx.count("block_rc", -cur.rowcount)
    return cur.rowcount > 0


async def resync_succeeded_many(db: Database, entries: list[tuple[bytes, bytes]]) -> None:
    """Drop many settled queue entries and their blocks' error counters, in one
    transaction."""
    if entries:
        await db.write(lambda tx: resync_done_many(tx, entries))


#: A deferred check is merged into another entry of its block due at most this long
#: (msec) after it; a later one would put the check off too far (a hand-off's deletion
#: behind the two-minute check a reference's arrival queued, say).
COALESCE_WINDOW_MSEC = 10_000


def defer_many(tx: Transaction, entries: list[tuple[bytes, bytes, int]]) -> int:
    merged = 0
    for key, hash, when in entries:
        new_key = queue_key(when, hash)
        until = queue_key(when + COALESCE_WINDOW_MSEC, b"\xff" * 32)
        later = tx.execute(
            "SELECT 1 FROM resync_queue WHERE value=? AND key>=? AND key<=? AND key<>? LIMIT 1",
            (bytes(hash), new_key, until, key),
        ).fetchone()
        if later is None:
            queue_put(tx, hash, when)
            if new_key != key:
                queue_drop(tx, key)
        else:
            queue_drop(tx, key)
            merged += 1
    return merged


async def resync_defer_many(db: Database, entries: list[tuple[bytes, bytes, int]]) -> int:
    """Reschedule many ``(key, hash, when_msec)`` queue entries in one transaction.

    An entry whose block already has another entry due from ``when_msec`` to
    :data:`COALESCE_WINDOW_MSEC` after it is dropped instead (that check covers it: a
    check looks at the facts of its time);
    returns how many were merged that way. Each new entry is written before the old one
    is removed, as for ``MetadataDb.queue_move``.
    """
    if not entries:
        return 0
    return await db.write(lambda tx: defer_many(tx, entries))


@dataclass(slots=True)
class ResyncBatchEnd:
    """What one transaction writes at the end of a resync worker's batch of deletions.

    ``cleared``: entries whose copy is gone (deleted by the batch, or found gone): their
    Deletable count row is dropped (never a Present one) with the entry and its error
    counter. ``done``: entries settled without touching the count (the block was kept:
    referenced again). ``defer``: ``(key, hash, when_msec)`` entries to look at again
    (merged into a later check of the block when one is queued). ``failed``: entries
    whose resync failed: error counter bumped, requeued at the back-off time.
    """

    cleared: list[tuple[bytes, bytes]] = field(default_factory=list)
    done: list[tuple[bytes, bytes]] = field(default_factory=list)
    defer: list[tuple[bytes, bytes, int]] = field(default_factory=list)
    failed: list[tuple[bytes, bytes]] = field(default_factory=list)


async def resync_end_batch(
    db: Database, end: ResyncBatchEnd, now_msec: int, retry_delay_msec: int
) -> dict[bytes, ErrorCounter]:
    """Write ``end`` in one transaction; return the error counter of each failed block.

    Each new queue entry is written before the old one is removed (as everywhere).
    """

    def run(tx: Transaction) -> dict[bytes, ErrorCounter]:
        for _key, hash in end.cleared:
            clear_deleted_rc(tx, hash, now_msec)
        resync_done_many(tx, end.cleared + end.done)
        defer_many(tx, end.defer)
        return {
            bytes(hash): resync_failed(tx, key, hash, now_msec, retry_delay_msec)
            for key, hash in end.failed
        }

    if not (end.cleared or end.done or end.defer or end.failed):
        return {}
    return await db.write(run)


def queue_after(db: Database, key: bytes, limit: int) -> list[tuple[bytes, Hash]]:
    """Up to ``limit`` queue entries (key, hash) after ``key``, earliest first (the resync
    workers look past entries already known to need work)."""
    rows = db.read_all(
        "SELECT key, value FROM resync_queue WHERE key > ? ORDER BY key LIMIT ?", (key, limit)
    )
    return [(bytes(k), Hash(v)) for k, v in rows]


__all__ = [
    "ResyncBatchEnd",
    "clear_deleted_rc",
    "defer_many",
    "key_bound",
    "queue_after",
    "queue_drop",
    "queue_put",
    "resync_defer_many",
    "resync_done_many",
    "resync_end_batch",
    "resync_failed",
    "resync_succeeded_many",
]
