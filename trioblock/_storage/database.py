"""The node's SQLite file: connections, schema, transactions and counts.

Rules kept here:

- **One writer, on the Trio thread.** Every write goes through the *writer* connection,
  in short transactions run on the Trio thread. Nothing else in the process writes, so
  ``BEGIN IMMEDIATE`` never waits (its busy timeout is zero): no SQLite lock wait can
  stall the event loop. Should another process hold the file, a synchronous caller gets
  a :class:`~trioblock.errors.DatabaseError` at once, never a raw ``sqlite3`` error;
  background (async) writers retry, waiting in Trio, for up to ``BUSY_PATIENCE``.
- **Long reads in threads.** Scans (repair's walk of the rc table, reference digests)
  run on a second, read-only connection in a worker thread. WAL readers never block the
  writer and are never blocked by it.
- **A transaction belongs to one task.** ``transaction()`` records the task that opened
  it; the same task nests with savepoints. A synchronous call from another task while it
  is open raises :class:`~trioblock.errors.TransactionBusyError` (it would otherwise
  join, and be rolled back with, a transaction it knows nothing about); asynchronous
  writers wait for it to close.
- **Counts are kept, not counted.** Row counts of trioblock's tables are read once at
  open and then adjusted by every committed change, so ``rc_len()`` and friends cost
  nothing (a rolled-back transaction's changes are never applied).
- **Checkpoints off the Trio thread.** The writer never checkpoints the WAL itself; after
  :data:`CHECKPOINT_EVERY` commits, :meth:`Database.run_checkpoints` (a task of the
  node) runs a passive checkpoint on the reader connection in a worker thread.
- **Durable commits, fsync off the Trio thread.** WAL mode; every commit is atomic and
  survives a process crash. With ``metadata_fsync`` (the default) a write also survives
  a power cut or an OS crash once it returns:

  - asynchronous writers (:meth:`Database.write`, which every background path uses)
    commit with ``synchronous=NORMAL`` and then await a group flush, an fsync of the
    WAL in a worker thread shared by every commit made before it started
    (``walflush.py`` says why that is as durable as ``FULL``, and what a failed fsync
    or a cancelled writer does);
  - synchronous transactions (:meth:`Database.transaction`: the application's
    ``incref``/``decref``/``bm.transaction()``, operator actions, and the one
    background step that must not await between its check and its write, a recount
    in a deletion's locked step) commit with ``synchronous=FULL``: SQLite fsyncs the
    WAL before COMMIT returns. That is the one fsync left on the Trio thread, the price
    of a durable synchronous API. ``PRAGMA synchronous`` read inside such a transaction
    says ``2`` (FULL).

  The writer connection's level is set before each outermost ``BEGIN`` (SQLite refuses
  the change inside a transaction) when it differs from the last one's, so a run of
  writes of one kind pays no pragma. Without ``metadata_fsync`` every connection runs
  ``NORMAL`` and nothing is flushed: a power cut may lose the last commits (those since
  the last checkpoint) but never tears one.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import cbor2
import sqlite_utils
import trio

from ..errors import DatabaseError, MetadataCorruptError, TransactionBusyError
from .snapshots import corrupt_message, is_corrupt
from .threads import run_blocking
from .walflush import Fsync, WalFlush

DB_NAME = "trioblock.sqlite"
SCHEMA_VERSION = 3
#: Older schema versions this trioblock migrates in place when it opens their file.
MIGRATES_FROM = (1, 2)
READER_BUSY_TIMEOUT_MS = 10_000
CHECKPOINT_EVERY = 500
#: How long a background write waits for another process that holds the file.
BUSY_PATIENCE = 10.0
#: ``PRAGMA synchronous`` of synchronous transactions and of asynchronous writers.
FULL, NORMAL = "FULL", "NORMAL"

T = TypeVar("T")

log = logging.getLogger("trioblock.storage")

#: trioblock's key/value tables (keys ordered, WITHOUT ROWID) and their counted rows.
KV_TABLES = ("block_rc", "resync_queue", "resync_errors", "block_ref")
#: Secondary indexes: purge finds a block's queue entries by hash; tombstone
#: collection finds old tombstones by state; ``owned_by`` finds an owner's rows (the
#: owner is the key after its 32-byte hash), in hash order.
INDEXES = {
    "resync_queue_by_hash": "resync_queue(value)",
    "block_ref_by_state": "block_ref(value)",
    "block_ref_by_owner": "block_ref(substr(key, 33), key)",
}


class Transaction:
    """An open transaction on the node's database.

    ``execute`` runs SQL in it; ``db`` is a ``sqlite_utils.Database`` over the same
    connection for callers who keep their own tables next to trioblock's. Pass the
    transaction to ``incref``/``decref`` to make reference changes part of it. Do not
    write to trioblock's own tables through it.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.connection = conn
        self.on_commit: list[Callable[[], None]] = []
        self._db: sqlite_utils.Database | None = None
        self._deltas: list[dict[str, int]] = [{}]

    @property
    def db(self) -> sqlite_utils.Database:
        """A ``sqlite_utils.Database`` over the transaction's connection (made on first use)."""
        if self._db is None:
            self._db = sqlite_utils.Database(self.connection)
        return self._db

    def execute(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
        """Run one SQL statement inside this transaction."""
        return self.connection.execute(sql, params)

    def count(self, table: str, delta: int) -> None:
        """Record a change of ``delta`` rows in one of trioblock's tables."""
        if delta:
            top = self._deltas[-1]
            top[table] = top.get(table, 0) + delta


def _connect(path: Path, busy_ms: int, fsync: bool) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {busy_ms}")
    # A per-connection setting: every connection gets it (the reader's checkpoints too).
    conn.execute(f"PRAGMA synchronous = {'FULL' if fsync else 'NORMAL'}")
    return conn


def _current_task() -> object | None:
    try:
        return trio.lowlevel.current_task()
    except RuntimeError:
        return None


def _is_busy(exc: DatabaseError) -> bool:
    cause = exc.__cause__
    return isinstance(cause, sqlite3.OperationalError) and (
        "locked" in str(cause) or "busy" in str(cause)
    )


@contextmanager
def sql_errors(what: str) -> Iterator[None]:
    """Turn ``sqlite3`` errors raised by trioblock's own statements into DatabaseError."""
    try:
        yield
    except sqlite3.Error as exc:
        raise DatabaseError(f"metadata database: {what} failed: {exc}") from exc


class Database:
    """The two connections to one node's SQLite file, transactions and row counts."""

    def __init__(
        self, metadata_dir: Path, *, fsync: bool = True, fsync_file: Fsync = os.fsync
    ) -> None:
        """Open (creating it if needed) ``metadata_dir/trioblock.sqlite``.

        ``fsync`` (``Config.metadata_fsync``): a commit survives a power cut once its
        call returns (synchronous transactions at ``FULL``, asynchronous writes at
        ``NORMAL`` followed by a flush); without it every connection runs ``NORMAL``.
        ``fsync_file`` is the function the flushes call on the WAL's (and the metadata
        directory's) descriptor: ``os.fsync``, or a test's stand-in.
        """
        try:
            metadata_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DatabaseError(f"cannot create metadata_dir {metadata_dir}: {exc}") from exc
        self.path = metadata_dir / DB_NAME
        #: The writer's ``PRAGMA synchronous`` (None: unknown, set it before the next BEGIN).
        self._level: str | None = FULL if fsync else NORMAL
        #: The group flush (None without ``fsync``, and while the schema is migrated:
        #: ``_connect`` made the writer ``FULL`` then).
        self._flush: WalFlush | None = None
        opened: list[sqlite3.Connection] = []
        try:
            with sql_errors(f"opening {self.path}"):
                self._w = _connect(self.path, 0, fsync)
                opened.append(self._w)
                self._w.execute("PRAGMA wal_autocheckpoint = 0")
                self._migrate()
                self._r = _connect(self.path, READER_BUSY_TIMEOUT_MS, fsync)
                opened.append(self._r)
                self._r.execute("PRAGMA query_only = 1")
                # Counting reads every page of the tables: a damaged one shows here.
                self._counts = {
                    t: int(self._w.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0])
                    for t in KV_TABLES
                }
                journal = str(self._w.execute("PRAGMA journal_mode").fetchone()[0]).lower()
        except DatabaseError as exc:
            for conn in opened:
                conn.close()
            if exc.__cause__ is not None and is_corrupt(exc.__cause__):
                raise MetadataCorruptError(corrupt_message(self.path, exc.__cause__)) from exc
            raise
        self._r_lock = threading.Lock()
        self._tx: Transaction | None = None
        self._tx_owner: object | None = None
        self._tx_closed: trio.Event | None = None
        self._savepoints = 0
        self._commits = 0
        self._checkpoint_wanted: trio.Event | None = None
        if fsync and journal == "wal":
            self._flush = WalFlush(Path(f"{self.path}-wal"), metadata_dir, fsync_file)
        elif fsync:
            # SQLite keeps its rollback journal where WAL is impossible (a file system
            # without shared memory): no WAL to flush, every commit stays FULL.
            log.warning(
                "%s: journal mode %r, not WAL: every commit fsyncs on the Trio thread",
                self.path,
                journal,
            )
        self.closed = False

    # -- schema ----------------------------------------------------------------------------

    def _migrate(self) -> None:
        db = sqlite_utils.Database(self._w)
        db.enable_wal()
        existing = set(db.table_names())
        version: int | None = None
        if "settings" in existing:
            row = self._w.execute(
                "SELECT value FROM settings WHERE key='schema_version'"
            ).fetchone()
            version = cbor2.loads(row[0]) if row else None
            if version not in (*MIGRATES_FROM, SCHEMA_VERSION):
                raise DatabaseError(
                    f"{self.path}: schema version {version!r}; this trioblock reads "
                    f"{', '.join(map(str, MIGRATES_FROM))} and {SCHEMA_VERSION}"
                )
        if version == SCHEMA_VERSION:
            return
        with self._raw_transaction():
            for name in KV_TABLES:
                if name not in existing:
                    self._w.execute(
                        f"CREATE TABLE {name} (key BLOB PRIMARY KEY NOT NULL, value BLOB NOT NULL)"
                        " WITHOUT ROWID"
                    )
            if "settings" not in existing:
                self._w.execute(
                    "CREATE TABLE settings (key TEXT PRIMARY KEY NOT NULL, value BLOB NOT NULL)"
                    " WITHOUT ROWID"
                )
            for index, target in INDEXES.items():
                self._w.execute(f"CREATE INDEX IF NOT EXISTS {index} ON {target}")
            self._w.execute(
                "INSERT OR REPLACE INTO settings VALUES ('schema_version', ?)",
                (cbor2.dumps(SCHEMA_VERSION),),
            )

    def close(self) -> None:
        """Close both connections (blocking: call it off the Trio thread)."""
        if not self.closed:
            self.closed = True
            with self._r_lock:
                self._r.close()
            self._w.close()
            if self._flush is not None:
                self._flush.close()

    def _check_open(self) -> None:
        if self.closed:
            raise DatabaseError("metadata database: the node is closed")

    # -- transactions ----------------------------------------------------------------------

    def _set_level(self, level: str) -> None:
        """The writer's ``PRAGMA synchronous`` for the next transaction (outside one)."""
        if self._flush is None or self._level == level:
            return
        self._level = None  # unknown until the pragma succeeded
        with sql_errors("PRAGMA synchronous"):
            self._w.execute(f"PRAGMA synchronous = {level}")
        self._level = level

    @contextmanager
    def _raw_transaction(self, level: str = FULL) -> Iterator[None]:
        self._set_level(level)
        with sql_errors("BEGIN"):
            self._w.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            if self._w.in_transaction:
                self._w.execute("ROLLBACK")
            raise
        try:
            with sql_errors("COMMIT"):
                self._w.execute("COMMIT")
        except DatabaseError:
            # A failed COMMIT (disk full, I/O error) may leave the transaction open:
            # end it, or every later BEGIN would fail.
            if self._w.in_transaction:
                self._w.execute("ROLLBACK")
            raise

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """A transaction of the calling task; nested calls of that task use savepoints.

        Raises :class:`TransactionBusyError` when another task's transaction is open.
        Callbacks in ``tx.on_commit`` run after the outermost commit. With ``fsync`` the
        commit is made with ``synchronous=FULL``: on disk when the block exits.
        """
        with self._transaction(FULL) as tx:
            yield tx

    @contextmanager
    def _transaction(self, level: str) -> Iterator[Transaction]:
        self._check_open()
        if self._flush is not None:
            self._flush.check()
        owner = _current_task()
        if self._tx is not None:
            if self._tx_owner is not owner:
                raise TransactionBusyError(
                    "the node's database is inside a transaction opened by another task; "
                    "do not await inside `with bm.transaction()`"
                )
            yield from self._savepoint(self._tx)
            return
        tx = Transaction(self._w)
        self._tx, self._tx_owner = tx, owner
        self._tx_closed = trio.Event() if owner is not None else None
        try:
            with self._raw_transaction(level):
                yield tx
        finally:
            self._tx = self._tx_owner = None
            if self._tx_closed is not None:
                self._tx_closed.set()
                self._tx_closed = None
        for table, delta in tx._deltas[0].items():
            self._counts[table] += delta
        self._commits += 1
        if self._flush is not None:
            self._flush.commit()
        if self._commits >= CHECKPOINT_EVERY and self._checkpoint_wanted is not None:
            self._checkpoint_wanted.set()
        for callback in tx.on_commit:
            callback()

    def _savepoint(self, tx: Transaction) -> Iterator[Transaction]:
        self._savepoints += 1
        name = f"sp{self._savepoints}"
        self._w.execute(f"SAVEPOINT {name}")
        tx._deltas.append({})
        try:
            yield tx
        except BaseException:
            tx._deltas.pop()
            self._w.execute(f"ROLLBACK TO {name}")
            self._w.execute(f"RELEASE {name}")
            raise
        finally:
            self._savepoints -= 1
        inner = tx._deltas.pop()
        for table, delta in inner.items():
            tx.count(table, delta)
        self._w.execute(f"RELEASE {name}")

    @contextmanager
    def use(self, tx: Transaction | None) -> Iterator[Transaction]:
        """The caller's transaction, or a new one."""
        if tx is not None:
            if tx.connection is not self._w:
                raise ValueError("that transaction belongs to another node's database")
            if self._tx is not tx:
                raise ValueError("that transaction is no longer open")
            yield tx
        else:
            with self.transaction() as new:
                yield new

    async def wait_turn(self) -> None:
        """Wait until no other task's transaction is open (then write without awaiting)."""
        await trio.lowlevel.checkpoint()
        owner = _current_task()
        while self._tx is not None and self._tx_owner is not owner:
            assert self._tx_closed is not None
            await self._tx_closed.wait()
        self._check_open()

    async def write(self, fn: Callable[[Transaction], T]) -> T:
        """Run ``fn`` in a transaction of its own once it is this task's turn.

        Should another process hold the file, the write is retried (waiting in Trio,
        never on the Trio thread) for up to :data:`BUSY_PATIENCE` seconds. With
        ``fsync`` it commits at ``synchronous=NORMAL`` and returns once a flush in a
        worker thread put the commit on disk (see ``walflush.py``); a cancellation
        while it waits is delivered after that flush, the commit standing. Raises
        :class:`~trioblock.errors.DiskError` when the flush (or an earlier one) failed.
        """
        delay = 0.005
        deadline = trio.current_time() + BUSY_PATIENCE
        while True:
            await self.wait_turn()
            # Inside this task's own open transaction: a savepoint, committed (and made
            # durable) by that transaction.
            outermost = self._tx is None
            try:
                with self._transaction(NORMAL) as tx, sql_errors("write"):
                    result = fn(tx)
            except DatabaseError as exc:
                if not _is_busy(exc) or trio.current_time() + delay > deadline:
                    raise
                await trio.sleep(delay)
                delay = min(delay * 2, 0.5)
                continue
            break
        if self._flush is not None and outermost:
            await self._flush.wait_durable(self._flush.committed)
        return result

    # -- reads -------------------------------------------------------------------------------

    def read_one(self, sql: str, params: Any = ()) -> Any:
        """One row from the writer connection (short indexed reads on the Trio thread)."""
        self._check_open()
        with sql_errors("read"):
            return self._w.execute(sql, params).fetchone()

    def read_all(self, sql: str, params: Any = ()) -> list[Any]:
        self._check_open()
        with sql_errors("read"):
            return self._w.execute(sql, params).fetchall()

    async def scan(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run a long read on the reader connection in a worker thread."""
        self._check_open()

        def run() -> T:
            with self._r_lock, sql_errors("scan"):
                if self.closed:
                    raise DatabaseError("metadata database: the node is closed")
                return fn(self._r)

        return await run_blocking(run)

    def count(self, table: str) -> int:
        """Rows in one of trioblock's tables (kept up to date, not counted)."""
        return self._counts[table]

    # -- checkpoints ---------------------------------------------------------------------------

    def _checkpoint_sync(self) -> None:
        with self._r_lock:
            if not self.closed:
                self._r.execute("PRAGMA wal_checkpoint(PASSIVE)")

    async def run_checkpoints(self) -> None:
        """Checkpoint the WAL in a worker thread every :data:`CHECKPOINT_EVERY` commits.

        A failed checkpoint is logged and tried again :data:`CHECKPOINT_EVERY` commits
        later: it runs in the node's nursery and must not take the node down.
        """
        while True:
            self._checkpoint_wanted = trio.Event()
            if self._commits >= CHECKPOINT_EVERY:
                self._checkpoint_wanted.set()
            await self._checkpoint_wanted.wait()
            self._commits = 0
            try:
                with sql_errors("checkpoint"):
                    await run_blocking(self._checkpoint_sync)
            except DatabaseError as exc:
                # The WAL only grows until the next try; the node keeps working.
                log.warning("%s (retried after %d more commits)", exc, CHECKPOINT_EVERY)


__all__ = ["DB_NAME", "Database", "Transaction", "sql_errors"]
