"""The ``block_ref`` table's point reads: one block's rows and counts, never a neighbour's."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import cbor2

from trioblock._storage.metadata import MetadataDb

LOW = bytes(31) + b"\x01"
MID = bytes(31) + b"\x02"
HIGH = b"\xff" * 32  # no upper bound for its key range


def test_count_alive_counts_one_block_tombstones_apart(tmp_path: Path) -> None:
    db = MetadataDb(tmp_path)
    try:
        with db.transaction() as tx:
            for h in (LOW, MID, HIGH):
                db.refs.merge_in(tx, (h, b"a", False, 1))
            db.refs.merge_in(tx, (MID, b"b", False, 2))
            db.refs.merge_in(tx, (MID, b"c", True, 3))
            db.refs.merge_in(tx, (MID, b"\xff" * 128, False, 4))
            db.refs.merge_in(tx, (HIGH, b"b", True, 5))
        assert db.refs.count_alive(MID) == (3, 4)
        assert db.refs.count_alive(LOW) == (1, 1)
        assert db.refs.count_alive(HIGH) == (1, 2)
        assert db.refs.count_alive(bytes(32)) == (0, 0)
        for h in (LOW, MID, HIGH):
            rows = db.refs.of_block(h)
            assert db.refs.count_alive(h) == (sum(s.alive for _o, s in rows), len(rows))
    finally:
        db.close()


async def test_owned_pages_through_one_owner_in_hash_order(tmp_path: Path) -> None:
    db = MetadataDb(tmp_path)
    try:
        with db.transaction() as tx:
            for h in (HIGH, LOW, MID):
                db.refs.merge_in(tx, (h, b"snap", False, 1))
            db.refs.merge_in(tx, (MID, b"snap2", False, 1))  # another owner, same block
            db.refs.merge_in(tx, (LOW, b"sna", False, 1))  # a prefix of the owner
            db.refs.merge_in(tx, (HIGH, b"snap", True, 2))
        rows, more = await db.refs.owned(b"snap", b"", 2)
        assert [(r[0], r[2]) for r in rows] == [(LOW, False), (MID, False)] and more
        rows, more = await db.refs.owned(b"snap", MID, 2)
        assert [(r[0], r[2]) for r in rows] == [(HIGH, True)] and not more
        assert await db.refs.owned(b"nobody", b"", 10) == ([], False)
    finally:
        db.close()


async def test_a_version_2_database_gains_the_owner_index(tmp_path: Path) -> None:
    db = MetadataDb(tmp_path)
    with db.transaction() as tx:
        db.refs.merge_in(tx, (MID, b"snap", False, 1))
    db.close()
    conn = sqlite3.connect(tmp_path / "trioblock.sqlite")
    conn.execute("DROP INDEX block_ref_by_owner")
    conn.execute("UPDATE settings SET value=? WHERE key='schema_version'", (cbor2.dumps(2),))
    conn.commit()
    conn.close()
    db = MetadataDb(tmp_path)
    try:
        assert db.get_setting("schema_version") == 3
        (name,) = db.read_one("SELECT name FROM sqlite_master WHERE name='block_ref_by_owner'")
        assert name == "block_ref_by_owner"
        rows, _more = await db.refs.owned(b"snap", b"", 10)
        assert [r[0] for r in rows] == [MID]
    finally:
        db.close()
