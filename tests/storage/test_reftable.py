"""The ``block_ref`` table's point reads: one block's rows and counts, never a neighbour's."""

from __future__ import annotations

from pathlib import Path

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
