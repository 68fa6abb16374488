"""Recounting reference counts from the ``block_ref`` rows (``repair refcounts``).

The count of a block that has rows in ``block_ref`` is the number of its alive rows:
every merge changes the count in the same transaction as the row, so the two only
drift apart through a bug, a crash of an older version, or a hand-edited file. This
module reads which blocks have rows (a worker thread, the reader connection) and fixes
one batch of counts in one transaction (the Trio thread), re-reading each block's rows
and count inside it, so that a merge committed between the two steps is never undone.

A fixed count follows the usual transitions and writes the resync entry they imply:
a count raised from nothing queues a check (the block is fetched should it be missing,
as ``incref`` does); a count dropped to zero makes the block deletable after
``gc_delay`` and queues the deletion check (as ``decref`` does). A block without any
``block_ref`` row is left alone: its count comes from local ``incref``/``decref``,
which no row records.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from .._core.hashing import HASH_LEN, Hash
from .._core.rcentry import RcEntry
from .._core.refcrdt import prefix_bounds
from .database import Transaction, sql_errors
from .metadata import MetadataDb
from .queuerows import queue_put
from .reftable import count_alive_in


@dataclass(frozen=True, slots=True)
class CountFix:
    """One count a recount changed: the block, its old and new entries."""

    hash: Hash
    old: RcEntry
    new: RcEntry


async def referenced_hashes(db: MetadataDb, after: bytes, limit: int) -> list[Hash]:
    """Up to ``limit`` distinct hashes having ``block_ref`` rows, after hash ``after``
    (empty: from the start), in order (a worker thread)."""
    if after:
        hi = prefix_bounds(after)[1]
        if hi is None:
            return []
        start = hi
    else:
        start = b""

    def run(conn: sqlite3.Connection) -> list[Hash]:
        out: list[Hash] = []
        key = start
        # One indexed seek per block: a block's rows are skipped without being read.
        while len(out) < limit:
            row = conn.execute(
                "SELECT key FROM block_ref WHERE key >= ? ORDER BY key LIMIT 1", (key,)
            ).fetchone()
            if row is None:
                break
            h = bytes(row[0][:HASH_LEN])
            out.append(Hash(h))
            nxt = prefix_bounds(h)[1]
            if nxt is None:
                break
            key = nxt
        return out

    return await db.scan(run)


def fix_counts_in(
    db: MetadataDb,
    tx: Transaction,
    hashes: list[Hash],
    *,
    now_msec: int,
    fetch_check_msec: int,
    gc_delay_msec: int,
    deletion_check_msec: int,
) -> list[CountFix]:
    """Set each block's count to its alive ``block_ref`` rows, in ``tx``; the changes."""
    fixes: list[CountFix] = []
    with sql_errors("recount"):
        for h in hashes:
            alive = count_alive_in(tx, h)
            old = db.get_rc_in(tx, h)
            if alive > 0:
                if old.count == alive:
                    continue
                new = RcEntry.present(alive)
                db.set_rc(tx, h, old, new)
                if not old.is_nonzero:
                    queue_put(tx, h, now_msec + fetch_check_msec)
            else:
                if not old.is_nonzero:
                    continue
                new = RcEntry.deletable(now_msec + gc_delay_msec)
                db.set_rc(tx, h, old, new)
                queue_put(tx, h, now_msec + deletion_check_msec)
            fixes.append(CountFix(h, old, new))
    return fixes


__all__ = ["CountFix", "fix_counts_in", "referenced_hashes"]
