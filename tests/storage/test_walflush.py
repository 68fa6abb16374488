"""Group commit of the metadata database: asynchronous writes return once a shared
fsync of the WAL (in a worker thread) covers them; synchronous transactions stay FULL.

The database is given a stand-in for ``os.fsync`` that records what it was asked to
flush (and how large the WAL was then) before flushing for real, or fails.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import stat
import threading
import time
from pathlib import Path

import pytest
import trio

from trioblock import blake2sum
from trioblock._storage.metadata import MetadataDb, Transaction
from trioblock.errors import DiskError

H = blake2sum(b"walflush test block")


class Fsyncs:
    """An ``fsync`` that records its calls: WAL sizes seen, directory flushes."""

    def __init__(self, *, delay: float = 0.0, fail: OSError | None = None) -> None:
        self.delay = delay
        self.fail = fail
        self.wal_sizes: list[int] = []
        self.wal_inodes: set[int] = set()
        self.dirs = 0
        self._lock = threading.Lock()

    def __call__(self, fd: int) -> None:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            with self._lock:
                self.dirs += 1
            os.fsync(fd)
            return
        time.sleep(self.delay)
        with self._lock:
            self.wal_sizes.append(st.st_size)
            self.wal_inodes.add(st.st_ino)
        if self.fail is not None:
            raise self.fail
        os.fsync(fd)


def wal(db: MetadataDb) -> Path:
    return Path(f"{db.path}-wal")


def settings_rows(db: MetadataDb) -> set[str]:
    """The settings' names as another process sees them (a fresh connection)."""
    conn = sqlite3.connect(db.path)
    try:
        return {r[0] for r in conn.execute("SELECT key FROM settings")}
    finally:
        conn.close()


async def test_a_write_returns_once_a_flush_covers_its_commit(tmp_path: Path) -> None:
    fsyncs = Fsyncs()
    db = MetadataDb(tmp_path, fsync_file=fsyncs)
    try:
        for i in range(3):
            await db.save_setting(f"s{i}", i)
            # The WAL as the commit left it was flushed before the write returned.
            assert fsyncs.wal_sizes, "no flush"
            assert fsyncs.wal_sizes[-1] == wal(db).stat().st_size
            assert len(fsyncs.wal_sizes) == i + 1
        assert fsyncs.wal_inodes == {wal(db).stat().st_ino}
        assert fsyncs.dirs == 1  # the directory holding the WAL's name, once
        # The commit went in at NORMAL: the flush, not SQLite, made it durable.
        assert db.read_one("PRAGMA synchronous") == (1,)
    finally:
        db.close()


async def test_concurrent_writers_share_fsyncs(tmp_path: Path) -> None:
    fsyncs = Fsyncs(delay=0.01)
    db = MetadataDb(tmp_path, fsync_file=fsyncs)
    writers = 40
    returned: list[int] = []
    try:

        async def one(i: int) -> None:
            await db.save_setting(f"w{i}", i)
            # Whatever flush let it return covered the WAL up to its commit at least.
            returned.append(i)

        async with trio.open_nursery() as nursery:
            for i in range(writers):
                nursery.start_soon(one, i)
        assert len(returned) == writers
        assert 1 <= len(fsyncs.wal_sizes) < writers // 4, fsyncs.wal_sizes
        assert fsyncs.wal_sizes[-1] == wal(db).stat().st_size
        assert settings_rows(db) >= {f"w{i}" for i in range(writers)}
    finally:
        db.close()


async def test_a_cancelled_writer_commit_stands_and_is_flushed(tmp_path: Path) -> None:
    fsyncs = Fsyncs(delay=0.02)
    db = MetadataDb(tmp_path, fsync_file=fsyncs)
    try:
        with trio.CancelScope() as scope:

            def write_then_cancel(tx: Transaction) -> None:
                tx.execute("INSERT INTO settings VALUES ('cancelled', x'00')")
                scope.cancel()  # delivered while the writer waits for its flush

            await db.write(write_then_cancel)
        assert scope.cancelled_caught  # the acknowledgement is lost...
        assert "cancelled" in settings_rows(db)  # ...the commit stands
        # ...and the flush it waited for ran to completion before the cancellation.
        assert fsyncs.wal_sizes and fsyncs.wal_sizes[-1] == wal(db).stat().st_size
    finally:
        db.close()


async def test_a_failed_fsync_fails_every_waiter_and_every_later_write(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """fsyncgate: a failed fsync is never retried into a success."""
    fsyncs = Fsyncs(delay=0.01, fail=OSError(errno.EIO, "Input/output error"))
    db = MetadataDb(tmp_path, fsync_file=fsyncs)
    errors: list[BaseException] = []
    try:

        async def one(i: int) -> None:
            try:
                await db.save_setting(f"w{i}", i)
            except DiskError as exc:
                errors.append(exc)

        async with trio.open_nursery() as nursery:
            for i in range(10):
                nursery.start_soon(one, i)
        assert len(errors) == 10
        for exc in errors:
            assert isinstance(exc, DiskError)
            assert exc.errno == errno.EIO
            assert exc.directory == str(tmp_path)
        assert len(fsyncs.wal_sizes) == 1  # tried once, never again
        with pytest.raises(DiskError, match="refused"):
            await db.save_setting("later", 1)
        with pytest.raises(DiskError):  # the synchronous API too
            db.incref(H, now_msec=0, resync_at=0)
        assert len(fsyncs.wal_sizes) == 1
        assert db.get_rc(H).count == 0  # reads go on
    finally:
        db.close()
    assert "fsync" in caplog.text and "refuses every write" in caplog.text


async def test_synchronous_transactions_commit_full(tmp_path: Path) -> None:
    """The synchronous API keeps SQLite's own fsync at commit, even right after an
    asynchronous write left the writer at NORMAL; it needs no flush."""
    fsyncs = Fsyncs()
    db = MetadataDb(tmp_path, fsync_file=fsyncs)
    try:
        await db.save_setting("async", 1)
        flushes = len(fsyncs.wal_sizes)
        assert db.read_one("PRAGMA synchronous") == (1,)
        with db.transaction() as tx:
            assert tx.execute("PRAGMA synchronous").fetchone() == (2,)
            db.incref(H, now_msec=0, resync_at=0, tx=tx)
        await db.save_setting("async again", 1)
        db.incref(H, now_msec=0, resync_at=0)  # a transaction of its own
        assert db.read_one("PRAGMA synchronous") == (2,)  # what it committed with
        db.set_setting("sync", 1)
        assert db.read_one("PRAGMA synchronous") == (2,)
        assert len(fsyncs.wal_sizes) == flushes + 1  # only the second async write's
        assert db.get_rc(H).count == 2
    finally:
        db.close()


async def test_through_the_node_synchronous_transactions_are_full(open_node) -> None:
    async with open_node() as bm:
        h = await bm.put_block(b"walflush through the node")
        await bm.add_reference(h, "owner")  # merged by an asynchronous write
        with bm.transaction() as tx:
            assert tx.execute("PRAGMA synchronous").fetchone() == (2,)
            assert bm.incref(h, tx) == 2


async def test_without_metadata_fsync_nothing_is_flushed(tmp_path: Path) -> None:
    fsyncs = Fsyncs()
    db = MetadataDb(tmp_path, fsync=False, fsync_file=fsyncs)
    try:
        await db.save_setting("a", 1)
        db.incref(H, now_msec=0, resync_at=0)
        with db.transaction() as tx:
            assert tx.execute("PRAGMA synchronous").fetchone() == (1,)
        assert db.read_one("PRAGMA synchronous") == (1,)
        assert fsyncs.wal_sizes == [] and fsyncs.dirs == 0
    finally:
        db.close()


async def test_without_a_wal_every_commit_stays_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Where SQLite keeps its rollback journal (WAL impossible on that file system) there
    is no WAL to flush: asynchronous writes commit FULL too, and nothing is refused."""
    import sqlite_utils

    monkeypatch.setattr(sqlite_utils.Database, "enable_wal", lambda self: None)
    fsyncs = Fsyncs()
    db = MetadataDb(tmp_path, fsync_file=fsyncs)
    try:
        assert db.read_one("PRAGMA journal_mode") == ("delete",)
        assert await db.write(lambda tx: tx.execute("PRAGMA synchronous").fetchone()) == (2,)
        await db.save_setting("a", 1)
        assert "a" in settings_rows(db)
        assert fsyncs.wal_sizes == [] and fsyncs.dirs == 0
    finally:
        db.close()
    assert "not WAL" in caplog.text


async def test_closing_the_database_waits_for_a_flush_under_way(tmp_path: Path) -> None:
    """The WAL's descriptor is not closed under a running fsync (which would then fail
    with EBADF, taken for a disk error, or flush whatever file reused the number)."""
    entered, release = threading.Event(), threading.Event()

    def gated(fd: int) -> None:
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            entered.set()
            release.wait(10)
        os.fsync(fd)  # EBADF if the descriptor was closed meanwhile

    db = MetadataDb(tmp_path, fsync_file=gated)
    closed = threading.Event()

    def close() -> None:
        db.close()
        closed.set()

    closer = threading.Thread(target=close)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(db.save_setting, "s", 1)  # raises DiskError on EBADF
        assert await trio.to_thread.run_sync(entered.wait, 10)
        closer.start()
        assert not await trio.to_thread.run_sync(closed.wait, 0.2)  # it waits...
        release.set()  # ...until the fsync returns
    await trio.to_thread.run_sync(closer.join, 10)
    assert closed.is_set()
