"""The node's metadata database: ``<metadata_dir>/trioblock.sqlite``.

Four key/value tables, keys and values as BLOBs, keys ordered (WITHOUT ROWID):

======================  =========================  =====================================
table                   key                        value
======================  =========================  =====================================
``block_rc``            hash (32 B)                ``RcEntry`` encoding
``resync_queue``        ``be64(when) ‖ hash``      hash
``resync_errors``       hash                       ``ErrorCounter`` encoding
``settings``            name (TEXT)                CBOR value
======================  =========================  =====================================

Rules kept here:

- WAL journal with ``synchronous=NORMAL``: every commit is atomic and survives a crash
  of the process; a power cut may lose the last commits but never tears one. An
  application keeping its own tables in this database (``transaction()``) gets its rows
  and its reference counts committed or lost together, which is what matters.
- A reference-count change and the resync entry it implies are written in the same
  transaction.
- A queue entry is only ever removed in the transaction that writes its successor, so a
  crash never loses pending work (a duplicate entry is harmless).

Two connections: the *foreground* one serves the synchronous API (``incref``,
``transaction()``, counts) on the Trio thread, where short statements cost
microseconds; the *background* one serves the workers from worker threads, one statement
group at a time. WAL lets them read concurrently; writers take turns.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import cbor2
import sqlite_utils

from .._core.hashing import Hash
from .._core.refcount import ErrorCounter, RcEntry, parse_queue_key, queue_key

DB_NAME = "trioblock.sqlite"
SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 10_000

T = TypeVar("T")

_KV_TABLES = ("block_rc", "resync_queue", "resync_errors")


@dataclass(frozen=True, slots=True)
class ResyncErrorInfo:
    """A block whose resync keeps failing (``list_resync_errors``)."""

    hash: Hash
    refcount: int
    error_count: int
    last_try: int
    next_try: int


class Transaction:
    """An open transaction on the node's database.

    ``execute`` runs SQL in it; ``db`` is a ``sqlite_utils.Database`` over the same
    connection for callers who keep their own tables next to trioblock's. Pass the
    transaction to ``incref``/``decref`` to make reference changes part of it.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.connection = conn
        self.on_commit: list[Callable[[], None]] = []
        self._db: sqlite_utils.Database | None = None

    @property
    def db(self) -> sqlite_utils.Database:
        """A ``sqlite_utils.Database`` over the transaction's connection (made on first use)."""
        if self._db is None:
            self._db = sqlite_utils.Database(self.connection)
        return self._db

    def execute(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
        return self.connection.execute(sql, params)


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA synchronous = NORMAL")
    return conn


class MetadataDb:
    """Both connections to one node's database, and every statement trioblock runs."""

    def __init__(self, metadata_dir: Path) -> None:
        metadata_dir.mkdir(parents=True, exist_ok=True)
        self.path = metadata_dir / DB_NAME
        self._fg = _connect(self.path)
        self._create_schema()
        self._bg = _connect(self.path)
        self._bg_lock = threading.Lock()
        self._tx: Transaction | None = None
        self._savepoints = 0
        self.closed = False

    def _create_schema(self) -> None:
        db = sqlite_utils.Database(self._fg)
        db.enable_wal()
        existing = set(db.table_names())
        with self._fg_transaction_raw():
            for name in _KV_TABLES:
                if name not in existing:
                    db.execute(
                        f"CREATE TABLE {name} (key BLOB PRIMARY KEY NOT NULL, value BLOB NOT NULL)"
                        " WITHOUT ROWID"
                    )
            if "settings" not in existing:
                db.execute(
                    "CREATE TABLE settings (key TEXT PRIMARY KEY NOT NULL, value BLOB NOT NULL)"
                    " WITHOUT ROWID"
                )
                self._fg.execute(
                    "INSERT INTO settings VALUES ('schema_version', ?)",
                    (cbor2.dumps(SCHEMA_VERSION),),
                )
        row = self._fg.execute("SELECT value FROM settings WHERE key='schema_version'").fetchone()
        version = cbor2.loads(row[0]) if row else None
        if version != SCHEMA_VERSION:
            raise RuntimeError(
                f"{self.path}: schema version {version!r}, this trioblock reads {SCHEMA_VERSION}"
            )

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            with self._bg_lock:
                self._bg.close()
            self._fg.close()

    # -- foreground: transactions ----------------------------------------------------------

    @contextmanager
    def _fg_transaction_raw(self) -> Iterator[None]:
        self._fg.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._fg.execute("ROLLBACK")
            raise
        self._fg.execute("COMMIT")

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """A transaction on the foreground connection; nested calls use savepoints.

        Callbacks in ``tx.on_commit`` run after the outermost commit.
        """
        if self._tx is not None:
            self._savepoints += 1
            name = f"sp{self._savepoints}"
            self._fg.execute(f"SAVEPOINT {name}")
            try:
                yield self._tx
            except BaseException:
                self._fg.execute(f"ROLLBACK TO {name}")
                self._fg.execute(f"RELEASE {name}")
                raise
            finally:
                self._savepoints -= 1
            self._fg.execute(f"RELEASE {name}")
            return
        tx = Transaction(self._fg)
        self._tx = tx
        try:
            with self._fg_transaction_raw():
                yield tx
        finally:
            self._tx = None
        for callback in tx.on_commit:
            callback()

    @contextmanager
    def _use(self, tx: Transaction | None) -> Iterator[Transaction]:
        if tx is not None:
            if tx.connection is not self._fg:
                raise ValueError("that transaction belongs to another node's database")
            yield tx
        else:
            with self.transaction() as new:
                yield new

    # -- foreground: reference counts ------------------------------------------------------

    def get_rc(self, hash: bytes) -> RcEntry:
        row = self._fg.execute("SELECT value FROM block_rc WHERE key=?", (bytes(hash),)).fetchone()
        return RcEntry.decode(row[0] if row else None)

    def _set_rc(self, tx: Transaction, hash: bytes, entry: RcEntry) -> None:
        value = entry.encode()
        if value is None:
            tx.execute("DELETE FROM block_rc WHERE key=?", (bytes(hash),))
        else:
            tx.execute("INSERT OR REPLACE INTO block_rc VALUES (?, ?)", (bytes(hash), value))

    def incref(
        self, hash: bytes, *, now_msec: int, resync_at: int, tx: Transaction | None = None
    ) -> tuple[RcEntry, bool]:
        """Add a reference; queue a resync check when the block just became referenced.

        Returns the new entry and whether a queue entry was written.
        """
        with self._use(tx) as t:
            old = self.get_rc(hash)
            new = old.incref()
            self._set_rc(t, hash, new)
            queued = not old.is_nonzero
            if queued:
                _queue_put(t.connection, hash, resync_at)
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
        with self._use(tx) as t:
            old = self.get_rc(hash)
            new = old.decref(now_msec, gc_delay_msec)
            if new == old:
                return new, False
            self._set_rc(t, hash, new)
            queued = not new.is_nonzero
            if queued:
                _queue_put(t.connection, hash, now_msec + resync_delay_msec)
        return new, queued

    # -- foreground: counts and listings -------------------------------------------------------

    def _count(self, table: str) -> int:
        return int(self._fg.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])

    def rc_len(self) -> int:
        return self._count("block_rc")

    def resync_queue_len(self) -> int:
        return self._count("resync_queue")

    def resync_errors_len(self) -> int:
        return self._count("resync_errors")

    def list_resync_errors(self, retry_delay_msec: int) -> list[ResyncErrorInfo]:
        rows = self._fg.execute(
            "SELECT e.key, e.value, r.value FROM resync_errors e "
            "LEFT JOIN block_rc r ON r.key = e.key ORDER BY e.key"
        ).fetchall()
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

    def retry_now(self, hash: bytes, now_msec: int) -> bool:
        """Forget a block's back-off and queue it now; False if it had no error."""
        with self.transaction() as tx:
            cur = tx.execute("DELETE FROM resync_errors WHERE key=?", (bytes(hash),))
            _queue_put(tx.connection, hash, now_msec)
        return cur.rowcount > 0

    def retry_all_now(self, now_msec: int) -> int:
        with self.transaction() as tx:
            hashes = [r[0] for r in tx.execute("SELECT key FROM resync_errors").fetchall()]
            tx.execute("DELETE FROM resync_errors")
            for h in hashes:
                _queue_put(tx.connection, h, now_msec)
        return len(hashes)

    def purge(self, hash: bytes) -> None:
        """Forget a block entirely: reference count, error counter and queue entries."""
        h = bytes(hash)
        with self.transaction() as tx:
            tx.execute("DELETE FROM block_rc WHERE key=?", (h,))
            tx.execute("DELETE FROM resync_errors WHERE key=?", (h,))
            tx.execute("DELETE FROM resync_queue WHERE value=?", (h,))

    def put_to_resync_fg(self, hash: bytes, when_msec: int) -> None:
        with self.transaction() as tx:
            _queue_put(tx.connection, hash, when_msec)

    # -- settings -----------------------------------------------------------------------------

    def get_setting(self, name: str, default: Any = None) -> Any:
        row = self._fg.execute("SELECT value FROM settings WHERE key=?", (name,)).fetchone()
        return default if row is None else cbor2.loads(row[0])

    def set_setting(self, name: str, value: Any) -> None:
        with self.transaction() as tx:
            tx.execute("INSERT OR REPLACE INTO settings VALUES (?, ?)", (name, cbor2.dumps(value)))

    # -- background (worker threads) ----------------------------------------------------------

    def _bg_run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        with self._bg_lock:
            return fn(self._bg)

    def _bg_write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def run(conn: sqlite3.Connection) -> T:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result

        return self._bg_run(run)

    def queue_head_sync(self, limit: int) -> list[tuple[bytes, Hash]]:
        """The first ``limit`` queue entries (key, hash), earliest first."""
        rows = self._bg_run(
            lambda c: c.execute(
                "SELECT key, value FROM resync_queue ORDER BY key LIMIT ?", (limit,)
            ).fetchall()
        )
        return [(bytes(k), Hash(v)) for k, v in rows]

    def queue_put_sync(self, hash: bytes, when_msec: int) -> None:
        self._bg_write(lambda c: _queue_put(c, hash, when_msec))

    def queue_put_many_sync(self, hashes: list[bytes], when_msec: int) -> None:
        def run(c: sqlite3.Connection) -> None:
            for h in hashes:
                _queue_put(c, h, when_msec)

        self._bg_write(run)

    def queue_move_sync(self, old_key: bytes, hash: bytes, when_msec: int) -> None:
        """Reschedule an entry: write the new one, then drop the old (one transaction)."""

        def run(c: sqlite3.Connection) -> None:
            _queue_put(c, hash, when_msec)
            if queue_key(when_msec, hash) != old_key:
                c.execute("DELETE FROM resync_queue WHERE key=?", (old_key,))

        self._bg_write(run)

    def get_error_sync(self, hash: bytes) -> ErrorCounter | None:
        row = self._bg_run(
            lambda c: c.execute(
                "SELECT value FROM resync_errors WHERE key=?", (bytes(hash),)
            ).fetchone()
        )
        return ErrorCounter.decode(row[0]) if row else None

    def get_rc_sync(self, hash: bytes) -> RcEntry:
        row = self._bg_run(
            lambda c: c.execute("SELECT value FROM block_rc WHERE key=?", (bytes(hash),)).fetchone()
        )
        return RcEntry.decode(row[0] if row else None)

    def resync_succeeded_sync(self, key: bytes, hash: bytes) -> None:
        def run(c: sqlite3.Connection) -> None:
            c.execute("DELETE FROM resync_errors WHERE key=?", (bytes(hash),))
            c.execute("DELETE FROM resync_queue WHERE key=?", (key,))

        self._bg_write(run)

    def resync_failed_sync(
        self, key: bytes, hash: bytes, now_msec: int, retry_delay_msec: int
    ) -> ErrorCounter:
        """Count a failure and requeue at the back-off time, in one transaction."""

        def run(c: sqlite3.Connection) -> ErrorCounter:
            row = c.execute(
                "SELECT value FROM resync_errors WHERE key=?", (bytes(hash),)
            ).fetchone()
            counter = (
                ErrorCounter.decode(row[0]).bump(now_msec) if row else ErrorCounter.first(now_msec)
            )
            c.execute(
                "INSERT OR REPLACE INTO resync_errors VALUES (?, ?)",
                (bytes(hash), counter.encode()),
            )
            when = max(counter.next_try(retry_delay_msec), now_msec + 1)
            _queue_put(c, hash, when)
            if queue_key(when, hash) != key:
                c.execute("DELETE FROM resync_queue WHERE key=?", (key,))
            return counter

        return self._bg_write(run)

    def clear_deleted_rc_sync(self, hash: bytes, now_msec: int) -> bool:
        """Drop a Deletable row whose time has passed (never a Present one)."""
        limit = RcEntry.deletable(now_msec).encode()

        def run(c: sqlite3.Connection) -> bool:
            cur = c.execute(
                "DELETE FROM block_rc WHERE key=? AND length(value)=16 AND value < ?",
                (bytes(hash), limit),
            )
            return cur.rowcount > 0

        return self._bg_write(run)

    def rc_hashes_sync(self, after: bytes, limit: int) -> list[Hash]:
        rows = self._bg_run(
            lambda c: c.execute(
                "SELECT key FROM block_rc WHERE key > ? ORDER BY key LIMIT ?", (after, limit)
            ).fetchall()
        )
        return [Hash(r[0]) for r in rows]

    def get_setting_sync(self, name: str, default: Any = None) -> Any:
        row = self._bg_run(
            lambda c: c.execute("SELECT value FROM settings WHERE key=?", (name,)).fetchone()
        )
        return default if row is None else cbor2.loads(row[0])

    def set_setting_sync(self, name: str, value: Any) -> None:
        self._bg_write(
            lambda c: c.execute(
                "INSERT OR REPLACE INTO settings VALUES (?, ?)", (name, cbor2.dumps(value))
            )
        )


def _queue_put(conn: sqlite3.Connection, hash: bytes, when_msec: int) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO resync_queue VALUES (?, ?)",
        (queue_key(when_msec, hash), bytes(hash)),
    )


__all__ = ["DB_NAME", "MetadataDb", "ResyncErrorInfo", "Transaction", "parse_queue_key"]
