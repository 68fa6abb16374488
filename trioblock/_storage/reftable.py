"""The ``block_ref`` table: one row per (hash, owner), tombstones included.

Merging is decided by ``_core/refcrdt.py``; this module only reads and writes rows. The
caller changes the reference count in the same transaction as the merge, from the
delta :meth:`RefTable.merge_in` returns.

Scans for anti-entropy (digests, pages of entries, old tombstones) run on the reader
connection in a worker thread; ``keep(hash)`` filters the entries to those shared with
one peer (both are storage nodes of the hash).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from .._core.refcrdt import (
    Digest,
    Reference,
    RefState,
    RefTuple,
    merge,
    prefix_bounds,
    rc_delta,
    ref_key,
    split_key,
)
from .database import Transaction

if TYPE_CHECKING:
    from .database import Database

Keep = Callable[[bytes], bool]


def _range_sql(prefix: bytes, after: bytes = b"") -> tuple[str, tuple[bytes, ...]]:
    lo, hi = prefix_bounds(prefix)
    sql = "SELECT key, value FROM block_ref WHERE key >= ?"
    params: tuple[bytes, ...] = (lo,)
    if after:
        sql += " AND key > ?"
        params += (after,)
    if hi is not None:
        sql += " AND key < ?"
        params += (hi,)
    return sql + " ORDER BY key", params


def _count_sql(hash: bytes) -> tuple[str, tuple[bytes, ...]]:
    lo, hi = prefix_bounds(hash)
    sql = (
        "SELECT COALESCE(SUM(substr(value, 1, 1) = x'00'), 0), COUNT(*) FROM block_ref"
        " WHERE key >= ?"
    )
    params: tuple[bytes, ...] = (lo,)
    if hi is not None:
        sql += " AND key < ?"
        params += (hi,)
    return sql, params


def count_alive_in(tx: Transaction, hash: bytes) -> int:
    """:meth:`RefTable.count_alive`'s alive rows, read in ``tx`` (a recount's)."""
    return int(tx.execute(*_count_sql(bytes(hash))).fetchone()[0])


def _rows(
    conn: sqlite3.Connection, prefix: bytes, keep: Keep, after: bytes = b""
) -> Iterator[tuple[bytes, bytes]]:
    sql, params = _range_sql(prefix, after)
    for key, value in conn.execute(sql, params):
        if keep(key[:32]):
            yield bytes(key), bytes(value)


class RefTable:
    """Reads and writes of ``block_ref`` rows."""

    def __init__(self, db: Database) -> None:
        self._db = db

    # -- merging (Trio thread, inside the caller's transaction) ----------------------------

    def merge_in(self, tx: Transaction, entry: RefTuple) -> tuple[int, bool, bool]:
        """Merge one entry; return (rc delta, whether the row changed, whether the pair
        is alive after the merge)."""
        hash, owner, deleted, ts = entry
        key = ref_key(hash, owner)
        row = tx.execute("SELECT value FROM block_ref WHERE key=?", (key,)).fetchone()
        old = RefState.decode(row[0]) if row else None
        new = merge(old, RefState(deleted, ts))
        if new == old:
            return 0, False, new.alive
        tx.execute("INSERT OR REPLACE INTO block_ref VALUES (?, ?)", (key, new.encode()))
        tx.count("block_ref", 0 if row else 1)
        return rc_delta(old, new), True, new.alive

    def collect_in(self, tx: Transaction, entry: RefTuple) -> bool:
        """Drop a tombstone no newer than ``entry``'s; never an alive row."""
        hash, owner, _deleted, ts = entry
        cur = tx.execute(
            "DELETE FROM block_ref WHERE key=? AND value >= ? AND value <= ?",
            (ref_key(hash, owner), RefState(True, 0).encode(), RefState(True, ts).encode()),
        )
        tx.count("block_ref", -cur.rowcount)
        return cur.rowcount > 0

    def drop_in(self, tx: Transaction, entry: RefTuple) -> int:
        """Drop the row of ``entry`` if it still holds exactly ``entry``'s state (a row
        handed off to the block's new storage nodes); the rc delta (-1: an alive row
        went)."""
        hash, owner, deleted, ts = entry
        cur = tx.execute(
            "DELETE FROM block_ref WHERE key=? AND value=?",
            (ref_key(hash, owner), RefState(deleted, ts).encode()),
        )
        tx.count("block_ref", -cur.rowcount)
        return -1 if cur.rowcount and not deleted else 0

    # -- point reads (Trio thread) --------------------------------------------------------

    def of_block(self, hash: bytes) -> list[tuple[bytes, RefState]]:
        """Every row of one block: (owner, state), owners in byte order."""
        rows = self._db.read_all(*_range_sql(bytes(hash)))
        return [(split_key(bytes(k))[1], RefState.decode(bytes(v))) for k, v in rows]

    def count_alive(self, hash: bytes) -> tuple[int, int]:
        """(alive rows, all rows) of one block, counted by SQLite (no row is loaded)."""
        alive, rows = self._db.read_one(*_count_sql(bytes(hash)))
        return int(alive), int(rows)

    def first_of(self, hash: bytes, limit: int) -> list[Reference]:
        """The first ``limit`` rows of one block (owners in byte order)."""
        sql, params = _range_sql(bytes(hash))
        rows = self._db.read_all(sql + " LIMIT ?", (*params, limit))
        out = []
        for key, value in rows:
            state = RefState.decode(bytes(value))
            out.append(Reference(split_key(bytes(key))[1], state.deleted, state.ts))
        return out

    def __len__(self) -> int:
        return self._db.count("block_ref")

    # -- scans (worker thread) ------------------------------------------------------------

    async def digests(self, prefixes: list[bytes], keep: Keep) -> list[tuple[int, bytes]]:
        """(count, digest) of the kept entries under each prefix."""

        def run(conn: sqlite3.Connection) -> list[tuple[int, bytes]]:
            out = []
            for prefix in prefixes:
                d = Digest()
                for key, value in _rows(conn, prefix, keep):
                    d.add(key, value)
                out.append(d.result())
            return out

        return await self._db.scan(run)

    async def page(
        self, prefix: bytes, after: bytes, limit: int, keep: Keep
    ) -> tuple[list[RefTuple], bool]:
        """Up to ``limit`` kept entries under ``prefix`` after key ``after``; more?"""

        def run(conn: sqlite3.Connection) -> tuple[list[RefTuple], bool]:
            out: list[RefTuple] = []
            for key, value in _rows(conn, prefix, keep, after):
                if len(out) == limit:
                    return out, True
                hash, owner = split_key(key)
                state = RefState.decode(value)
                out.append((bytes(hash), owner, state.deleted, state.ts))
            return out, False

        return await self._db.scan(run)

    async def owned(self, owner: bytes, after: bytes, limit: int) -> tuple[list[RefTuple], bool]:
        """Up to ``limit`` rows of ``owner`` (tombstones included) whose hash comes after
        ``after`` (``b""``: from the first), in hash order, found through the owner
        index; and whether more follow."""
        start = ref_key(after, owner) if after else b""

        def run(conn: sqlite3.Connection) -> tuple[list[RefTuple], bool]:
            rows = conn.execute(
                "SELECT key, value FROM block_ref INDEXED BY block_ref_by_owner "
                "WHERE substr(key, 33) = ? AND key > ? ORDER BY key LIMIT ?",
                (bytes(owner), start, limit + 1),
            ).fetchall()
            out: list[RefTuple] = []
            for key, value in rows[:limit]:
                hash, own = split_key(bytes(key))
                state = RefState.decode(bytes(value))
                out.append((bytes(hash), own, state.deleted, state.ts))
            return out, len(rows) > limit

        return await self._db.scan(run)

    async def old_tombstones(
        self, before_ts: int, after: RefTuple | None, limit: int
    ) -> list[RefTuple]:
        """Tombstones older than ``before_ts``, oldest first, resuming after ``after``."""
        lo = RefState(True, 0).encode()
        cursor = (
            (lo, b"")
            if after is None
            else (RefState(True, after[3]).encode(), ref_key(after[0], after[1]))
        )

        def run(conn: sqlite3.Connection) -> list[RefTuple]:
            rows = conn.execute(
                "SELECT key, value FROM block_ref INDEXED BY block_ref_by_state "
                "WHERE value >= ? AND value < ? AND (value, key) > (?, ?) "
                "ORDER BY value, key LIMIT ?",
                (lo, RefState(True, before_ts).encode(), *cursor, limit),
            ).fetchall()
            out: list[RefTuple] = []
            for key, value in rows:
                hash, owner = split_key(bytes(key))
                state = RefState.decode(bytes(value))
                out.append((bytes(hash), owner, state.deleted, state.ts))
            return out

        return await self._db.scan(run)


__all__ = ["Keep", "RefTable", "count_alive_in"]
