"""The metadata database: file, schema, and transactional refcount + queue updates."""

from __future__ import annotations

import sqlite3
import struct
import time
from pathlib import Path
from typing import Any

import pytest
import trio

import trioblock
from trioblock import blake2sum
from trioblock._storage import metadata
from trioblock._storage.metadata import MetadataDb
from trioblock.errors import DatabaseError, TransactionBusyError

H = blake2sum(b"metadata test block")


def be64(n: int) -> bytes:
    return struct.pack(">Q", n)


def db_path(bm: trioblock.BlockManager) -> Path:
    assert bm.config.metadata_dir is not None
    return Path(bm.config.metadata_dir) / "trioblock.sqlite"


def rows(db_path: Path, table: str) -> list[tuple[bytes, bytes]]:
    """The rows of ``table`` as another process would see them (a fresh connection)."""
    conn = sqlite3.connect(db_path)
    try:
        return [(bytes(k), bytes(v)) for k, v in conn.execute(f"SELECT key, value FROM {table}")]
    finally:
        conn.close()


def test_database_file_is_in_metadata_dir_in_wal_mode(tmp_path: Path) -> None:
    db = MetadataDb(tmp_path / "meta")
    try:
        assert db.path == tmp_path / "meta" / "trioblock.sqlite"
        assert db.path.is_file()
    finally:
        db.close()
    conn = sqlite3.connect(tmp_path / "meta" / "trioblock.sqlite")
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


@pytest.mark.parametrize(("fsync", "synchronous"), [(True, 2), (False, 1)])
async def test_both_connections_get_the_synchronous_setting(
    tmp_path: Path, fsync: bool, synchronous: int
) -> None:
    """``synchronous`` is per connection: the writer's and the reader's (which also runs
    the WAL checkpoints) are both FULL (2) with ``fsync``, NORMAL (1) without."""
    db = MetadataDb(tmp_path, fsync=fsync)
    try:
        assert db.read_one("PRAGMA synchronous") == (synchronous,)
        assert await db.scan(lambda c: c.execute("PRAGMA synchronous").fetchone()) == (synchronous,)
    finally:
        db.close()


def test_full_synchronous_is_the_default(tmp_path: Path) -> None:
    db = MetadataDb(tmp_path)
    try:
        assert db.read_one("PRAGMA synchronous") == (2,)
    finally:
        db.close()


def test_schema_is_four_ordered_key_value_tables(tmp_path: Path) -> None:
    MetadataDb(tmp_path).close()
    conn = sqlite3.connect(tmp_path / "trioblock.sqlite")
    try:
        listing = {
            name: without_rowid
            for _schema, name, kind, _ncol, without_rowid, _strict in conn.execute(
                "PRAGMA table_list"
            )
            if kind == "table" and not name.startswith("sqlite_")
        }
        assert listing == {
            "block_rc": 1,
            "resync_queue": 1,
            "resync_errors": 1,
            "block_ref": 1,
            "settings": 1,
        }
        for table, key_type in [
            ("block_rc", "BLOB"),
            ("resync_queue", "BLOB"),
            ("resync_errors", "BLOB"),
            ("settings", "TEXT"),
        ]:
            columns = [
                (name, ctype.upper(), pk)
                for _cid, name, ctype, _notnull, _default, pk in conn.execute(
                    f"PRAGMA table_info({table})"
                )
            ]
            assert columns == [("key", key_type, 1), ("value", "BLOB", 0)], table
    finally:
        conn.close()


def test_reopening_keeps_rows_and_schema(tmp_path: Path) -> None:
    db = MetadataDb(tmp_path)
    db.incref(H, now_msec=1000, resync_at=5000)
    db.set_setting("knob", {"a": 1})
    db.close()
    db = MetadataDb(tmp_path)
    try:
        assert db.get_rc(H).count == 1
        assert db.resync_queue_len() == 1
        assert db.get_setting("knob") == {"a": 1}
        assert db.get_setting("missing", 7) == 7
    finally:
        db.close()


def test_incref_writes_rc_row_and_queue_entry(tmp_path: Path) -> None:
    db = MetadataDb(tmp_path)
    try:
        entry, queued = db.incref(H, now_msec=1000, resync_at=61_000)
        assert (entry.count, queued) == (1, True)
        entry, queued = db.incref(H, now_msec=2000, resync_at=62_000)
        assert (entry.count, queued) == (2, False)
        assert rows(db.path, "block_rc") == [(H, be64(2))]
        assert rows(db.path, "resync_queue") == [(be64(61_000) + H, H)]
    finally:
        db.close()


def test_decref_to_zero_writes_deletable_row_and_deletion_check(tmp_path: Path) -> None:
    db = MetadataDb(tmp_path)
    try:
        db.incref(H, now_msec=0, resync_at=60_000)
        entry, queued = db.decref(
            H, now_msec=1000, gc_delay_msec=600_000, resync_delay_msec=610_000
        )
        assert entry.count == 0 and queued
        assert rows(db.path, "block_rc") == [(H, be64(0) + be64(601_000))]
        assert sorted(rows(db.path, "resync_queue")) == [
            (be64(60_000) + H, H),
            (be64(611_000) + H, H),
        ]
        # A decref of an unreferenced block changes nothing.
        entry, queued = db.decref(H, now_msec=2000, gc_delay_msec=1, resync_delay_msec=1)
        assert not queued
        assert rows(db.path, "block_rc") == [(H, be64(0) + be64(601_000))]
    finally:
        db.close()


def test_rc_and_queue_entry_commit_together_or_not_at_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = MetadataDb(tmp_path)
    try:

        def broken_queue_put(*args: object) -> None:
            raise sqlite3.OperationalError("disk I/O error")

        monkeypatch.setattr(metadata, "queue_put", broken_queue_put)
        with pytest.raises(DatabaseError, match="disk I/O error"):
            db.incref(H, now_msec=0, resync_at=1)
        monkeypatch.undo()
        assert rows(db.path, "block_rc") == []
        assert rows(db.path, "resync_queue") == []
    finally:
        db.close()


async def test_failed_resync_counts_and_requeues_in_one_step(tmp_path: Path) -> None:
    db = MetadataDb(tmp_path)
    try:
        db.incref(H, now_msec=0, resync_at=60_000)
        ((key, _),) = db.queue_head(1)
        counter = await db.resync_failed(key, H, 60_000, 60_000)
        assert (counter.errors, counter.last_try) == (1, 60_000)
        assert rows(db.path, "resync_queue") == [(be64(120_000) + H, H)]
        assert rows(db.path, "resync_errors") == [(H, be64(1) + be64(60_000))]
        ((key, _),) = db.queue_head(1)
        await db.resync_succeeded(key, H)
        assert rows(db.path, "resync_queue") == []
        assert rows(db.path, "resync_errors") == []
    finally:
        db.close()


def test_the_queue_head_can_be_read_up_to_a_time(tmp_path: Path) -> None:
    """The resync workers read only due entries, and the time of the next one."""
    db = MetadataDb(tmp_path)
    try:
        hashes = [bytes([i]) * 32 for i in range(1, 5)]
        for h, when in zip(hashes, (1_000, 2_000, 2_000, 3_000), strict=True):
            db.incref(h, now_msec=0, resync_at=when)
        assert db.queue_head(10, due_by_msec=999) == []
        assert [h for _k, h in db.queue_head(10, due_by_msec=1_000)] == [hashes[0]]
        due = [h for _k, h in db.queue_head(10, due_by_msec=2_999)]
        assert due == [hashes[0], *sorted(hashes[1:3])]
        assert len(db.queue_head(2, due_by_msec=5_000)) == 2
        assert db.queue_next_after(0) == 1_000
        assert db.queue_next_after(1_000) == 2_000
        assert db.queue_next_after(2_000) == 3_000
        assert db.queue_next_after(3_000) is None
    finally:
        db.close()


async def test_clear_deleted_rc_never_drops_a_present_row(tmp_path: Path) -> None:
    db = MetadataDb(tmp_path)
    try:
        db.incref(H, now_msec=0, resync_at=0)
        assert not await db.clear_deleted_rc(H, 10**12)
        db.decref(H, now_msec=0, gc_delay_msec=1000, resync_delay_msec=0)
        assert not await db.clear_deleted_rc(H, 1000)  # not yet past its time
        assert await db.clear_deleted_rc(H, 1001)
        assert db.rc_len() == 0
    finally:
        db.close()


# -- through the node's transaction() ----------------------------------------------------


def db_file(bm: Any) -> Path:
    """The node's SQLite file (its documented place in the metadata directory)."""
    return Path(bm.config.metadata_dir) / "trioblock.sqlite"


async def test_rolled_back_transaction_persists_neither_rc_nor_queue(open_node) -> None:
    async with open_node() as bm:
        with pytest.raises(RuntimeError, match="boom"), bm.transaction() as tx:
            assert bm.incref(H, tx) == 1
            assert bm.get_block_rc(H) == 1  # visible inside the transaction
            raise RuntimeError("boom")
        assert bm.get_block_rc(H) == 0
        assert bm.rc_len() == 0
        assert bm.resync_queue_len() == 0
        assert rows(db_file(bm), "block_rc") == []
        assert rows(db_file(bm), "resync_queue") == []


async def test_user_rows_and_incref_commit_atomically(open_node) -> None:
    async with open_node() as bm:
        with bm.transaction() as tx:
            tx.execute("CREATE TABLE objects (name TEXT PRIMARY KEY, hash BLOB)")
        with bm.transaction() as tx:
            tx.execute("INSERT INTO objects VALUES (?, ?)", ("a.txt", bytes(H)))
            bm.incref(H, tx)
            # Nothing is visible to another connection before the commit.
            assert rows(db_file(bm), "block_rc") == []
        other = sqlite3.connect(db_file(bm))
        try:
            assert other.execute("SELECT name, hash FROM objects").fetchall() == [
                ("a.txt", bytes(H))
            ]
        finally:
            other.close()
        assert rows(db_file(bm), "block_rc") == [(H, be64(1))]
        assert len(rows(db_file(bm), "resync_queue")) == 1

        with pytest.raises(KeyError), bm.transaction() as tx:
            tx.execute("INSERT INTO objects VALUES (?, ?)", ("b.txt", bytes(H)))
            bm.incref(H, tx)
            bm.decref(H, tx)
            bm.decref(H, tx)
            raise KeyError("abort")
        assert bm.get_block_rc(H) == 1
        assert rows(db_file(bm), "block_rc") == [(H, be64(1))]
        with bm.transaction() as tx:
            assert tx.execute("SELECT COUNT(*) FROM objects").fetchone()[0] == 1


async def test_nested_transaction_rolls_back_only_the_inner_part(open_node) -> None:
    other = blake2sum(b"other")
    async with open_node() as bm:
        with bm.transaction() as tx:
            bm.incref(H, tx)
            with pytest.raises(ValueError), bm.transaction() as inner:
                bm.incref(other, inner)
                raise ValueError
        assert bm.get_block_rc(H) == 1
        assert bm.get_block_rc(other) == 0


async def test_another_tasks_transaction_is_never_joined(open_node) -> None:
    """Task A awaits inside its transaction; task B's incref must not join it (and be
    rolled back with it): B is refused clearly, and succeeds once A is done."""
    other = blake2sum(b"task b")
    async with open_node() as bm:
        a_inside = trio.Event()
        b_done = trio.Event()
        refused: list[BaseException] = []

        async def task_a() -> None:
            with pytest.raises(RuntimeError, match="rolled back"), bm.transaction() as tx:
                bm.incref(H, tx)
                a_inside.set()
                await b_done.wait()
                raise RuntimeError("rolled back")

        async def task_b() -> None:
            await a_inside.wait()
            try:
                bm.incref(other)
            except TransactionBusyError as exc:
                refused.append(exc)
            b_done.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(task_a)
            nursery.start_soon(task_b)
        assert len(refused) == 1 and "another task" in str(refused[0])
        assert bm.get_block_rc(H) == 0
        assert bm.get_block_rc(other) == 0
        assert bm.incref(other) == 1
        assert rows(db_path(bm), "block_rc") == [(other, be64(1))]


async def test_a_locked_database_never_stalls_the_event_loop(open_node) -> None:
    """Another writer holding the file: a reference change fails at once with a
    DatabaseError instead of blocking the Trio thread (or leaking sqlite3 errors)."""
    async with open_node() as bm:
        holder = sqlite3.connect(db_path(bm), isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            started = time.monotonic()
            with pytest.raises(DatabaseError, match="locked"):
                bm.incref(H)
            assert time.monotonic() - started < 1.0
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert bm.incref(H) == 1
        assert bm.rc_len() == 1


async def test_counts_follow_commits_and_rollbacks(open_node) -> None:
    async with open_node() as bm:
        with bm.transaction() as tx:
            bm.incref(H, tx)
            with pytest.raises(ValueError), bm.transaction() as inner:
                bm.incref(blake2sum(b"inner"), inner)
                raise ValueError
        with pytest.raises(KeyError), bm.transaction() as tx:
            bm.incref(blake2sum(b"outer"), tx)
            raise KeyError
        assert bm.rc_len() == len(rows(db_path(bm), "block_rc")) == 1
        assert bm.resync_queue_len() == len(rows(db_path(bm), "resync_queue")) == 1


async def test_background_writes_wait_for_another_process_in_trio(
    open_node, autojump_clock
) -> None:
    """An async (background) write retries while another process holds the file,
    waiting in Trio, and lands once the file is free."""
    async with open_node() as bm:
        assert await bm.put_block(b"metadata test block") == H  # a reference needs its block
        path = db_path(bm)
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        released = trio.Event()

        async def release_soon() -> None:
            await trio.sleep(0.2)
            holder.execute("ROLLBACK")
            holder.close()
            released.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(release_soon)
            await bm.add_reference(H, "owner")  # the merge is a background-style write
        assert released.is_set()
        assert bm.get_block_rc(H) == 1


async def test_a_failing_wal_checkpoint_is_logged_not_fatal(
    open_node, autojump_clock, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The checkpoint task runs in the node's nursery: a disk error there must not take
    the node down; it is logged and the next checkpoint tries again."""
    from trioblock._storage import database

    attempts = 0

    def failing_checkpoint(self: database.Database) -> None:
        nonlocal attempts
        attempts += 1
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(database.Database, "_checkpoint_sync", failing_checkpoint)
    async with open_node() as bm:
        for i in range(2 * database.CHECKPOINT_EVERY + 1):
            bm.incref(blake2sum(b"%d" % i))
            await trio.lowlevel.checkpoint()
        await trio.sleep(1)
        assert attempts == 2
        assert bm.incref(H) == 1
    assert "checkpoint failed" in caplog.text


async def test_a_read_finding_corruption_during_another_tasks_transaction(
    open_node, disk, autojump_clock
) -> None:
    """A corrupt copy found while another task holds a transaction open: the read
    reports the corruption (not a busy database) and the repair is queued once the
    transaction closed."""
    async with open_node() as bm:
        h = await bm.put_block(b"soon corrupt" * 100)
        disk.flip_byte(disk.block_file(bm.config.data_dirs[0].path, h))
        queued_before = bm.resync_queue_len()
        errors: list[BaseException] = []

        async def holder() -> None:
            with bm.transaction() as tx:
                tx.execute("CREATE TABLE IF NOT EXISTS app (k TEXT)")
                await trio.sleep(5)

        async def reader() -> None:
            await trio.sleep(1)
            try:
                await bm.get_block(h)
            except trioblock.TrioblockError as exc:
                errors.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(holder)
            nursery.start_soon(reader)
        assert [type(e) for e in errors] == [trioblock.CorruptBlockError]
        assert bm.resync_queue_len() == queued_before + 1
