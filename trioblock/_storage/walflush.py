"""Group commit for the metadata database: the WAL's fsync, in a worker thread.

With ``metadata_fsync`` the asynchronous writers (``Database.write``: reference
merges, resync queue updates, ...) commit with ``synchronous=NORMAL`` on the Trio
thread, then await a *flush*: an ``fsync`` of the ``-wal`` file (and, at the first
flush, of the metadata directory, where the WAL file's name lives), run through
:func:`~trioblock._storage.threads.run_blocking`. One flush is in flight at a time;
it covers every commit made before it started (commits are numbered, and the flush
records the number it reached). A commit that lands while a flush runs waits for the
next one, which then serves every commit made meanwhile: many writers share one fsync.

Why a flushed commit survives a power cut, as one made with ``synchronous=FULL``:

- In WAL mode a commit appends its frames, the last one marked as a commit, to the
  ``-wal`` file; with ``NORMAL`` they are written, not synced. After ``fsync`` of that
  file (and once of its directory) they are on disk; that is exactly what ``FULL``
  does at every commit. Recovery replays the WAL's frames in order up to the last valid
  commit frame (frames carry a checksum chained from the header), so a synced WAL is a
  synced prefix of commits: one fsync covers every commit written before it started.
- A checkpoint never loses them: it syncs the WAL before copying frames into the
  database file and syncs the database file before it records them as copied; the
  writer restarts the WAL from its beginning (overwriting old frames, under a new salt,
  after syncing the new header) only once a checkpoint has copied every frame. A
  restart therefore never overwrites frames that are not yet in the (synced) database
  file. This holds for ``NORMAL`` as for ``FULL``: both sync at checkpoints, only
  ``FULL`` also syncs at commit. (The node's checkpoints, ``Database.run_checkpoints``,
  are passive and run on the reader connection, also at ``FULL``.)
- The WAL file is never replaced while the node's connections are open (SQLite
  deletes it only when the last connection closes), so one descriptor, opened at the
  first flush, serves every flush; keeping it open also means that a writeback error
  of the WAL is reported to it (Linux reports such errors to every descriptor open when
  they happened).

A flush that fails (``EIO``...) cannot be retried: after a failed fsync the kernel
may have dropped the dirty pages and a second fsync would report success for data
that never reached the disk. What is on disk is unknown, so the failure is final: the
waiting writers and every later write get a :class:`~trioblock.errors.DiskError` naming
the metadata directory (restart the node once the disk is checked; SQLite's recovery
then starts from what the disk holds).

Cancellation: a writer cancelled while it waits has committed already: its commit
stands (readers see it) and the flush it waits for is shielded and runs to completion,
so the commit is on disk before the cancellation is delivered; only the
acknowledgement is lost. No commit is thus ever left unflushed because its writer went
away.

The window between a commit and its flush: other tasks may read the committed rows
before they are on disk (for about one fsync). Whatever they then commit themselves is
durable only after the same WAL prefix is, so the database never holds a later commit
without the earlier one. Actions outside the database taken on such a read follow the
reference counts only after ``gc_delay`` plus a margin (a deletion), long after the
flush; a peer answered from such a read (a digest, whether a block is needed) is told
what it would be told a moment later, and should a power cut take the rows back here,
anti-entropy brings them back from the nodes that sent them.

(The checkpoint and restart rules above are those of SQLite's ``wal.c``
(``walCheckpoint``, ``sqlite3WalFrames``: "sync the header unless synchronous=OFF");
the SQLite under this Python was 3.40 when this was written.)
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

import trio

from ..errors import DiskError
from .threads import run_blocking

log = logging.getLogger("trioblock.storage")

Fsync = Callable[[int], None]


class WalFlush:
    """Commit numbers, the number flushed so far, and the flushes that advance it."""

    def __init__(self, wal_path: Path, directory: Path, fsync: Fsync = os.fsync) -> None:
        self._wal_path = wal_path
        self._directory = directory
        self._fsync = fsync
        self._fd: int | None = None
        #: Commits made so far (every outermost commit of the writer connection).
        self.committed = 0
        #: Every commit up to this number is on disk.
        self.durable = 0
        self._flushing: trio.Event | None = None
        self._failure: OSError | None = None
        self._limiter = trio.CapacityLimiter(1)
        #: Held by a flush (worker thread) and by :meth:`close`: the descriptor is never
        #: closed under a running fsync (nor its number reused by another file meanwhile).
        self._fd_lock = threading.Lock()
        self._closed = False

    @property
    def failed(self) -> bool:
        return self._failure is not None

    def check(self) -> None:
        """Raise :class:`DiskError` when a flush failed (every later write is refused)."""
        if self._failure is not None:
            exc = self._failure
            raise DiskError(
                str(self._directory),
                exc.errno,
                f"metadata database: fsync of {self._wal_path} failed ({exc.strerror or exc}): "
                "what reached the disk is unknown, every later write is refused; restart the "
                "node once the disk is checked",
            ) from exc

    def commit(self) -> int:
        """Count one commit; its number (flushed once :attr:`durable` reaches it)."""
        self.committed += 1
        return self.committed

    async def wait_durable(self, number: int) -> None:
        """Return once commit ``number`` is on disk (flushing if no flush is running).

        Shielded: a cancelled caller waits for the flush anyway, then gets its
        cancellation (the commit stands either way). Raises :class:`DiskError` if a
        flush failed before it got there.
        """
        with trio.CancelScope(shield=True):
            while self.durable < number:
                self.check()
                if self._flushing is not None:
                    await self._flushing.wait()
                else:
                    await self._flush()
        await trio.lowlevel.checkpoint_if_cancelled()

    async def _flush(self) -> None:
        target = self.committed
        done = self._flushing = trio.Event()
        try:
            await run_blocking(self._flush_sync, limiter=self._limiter)
        except OSError as exc:
            if self._failure is None:
                self._failure = exc
                log.error(
                    "metadata database: fsync of %s failed: %s; the node refuses every "
                    "write to its metadata from now on (restart it once the disk is checked)",
                    self._wal_path,
                    exc,
                )
        else:
            self.durable = max(self.durable, target)
        finally:
            self._flushing = None
            done.set()

    def _flush_sync(self) -> None:
        """Fsync the WAL (and, the first time, its directory). In a worker thread."""
        with self._fd_lock:
            if self._closed:
                # The connections are closed: SQLite checkpointed the WAL into the
                # database file and synced it, there is nothing left to flush.
                return
            if self._fd is None:
                fd = os.open(self._wal_path, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    dir_fd = os.open(self._directory, os.O_RDONLY | os.O_CLOEXEC)
                    try:
                        self._fsync(dir_fd)
                    finally:
                        os.close(dir_fd)
                except BaseException:
                    os.close(fd)
                    raise
                self._fd = fd
            self._fsync(self._fd)

    def close(self) -> None:
        """Close the WAL's descriptor (after the connections' last commit); waits for a
        flush under way (blocking: call it off the Trio thread)."""
        with self._fd_lock:
            self._closed = True
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


__all__ = ["Fsync", "WalFlush"]
