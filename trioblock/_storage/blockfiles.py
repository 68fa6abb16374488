"""Block files in data directories: the node's ``BlockStore``.

Rules kept here (the names are in ``paths``, a put's write in ``writepath`` on top of
``_core/copydecision``, the durable write in ``durable``, the walk in ``dirwalk``, markers
in ``markers``; every file operation goes through the store's ``Disk``, the real one
being ``realdisk``):

- Lookup order: with compression on, ``.zst`` before plain; with it off, plain before
  ``.zst``; the primary directory of the block's partition before its secondaries.
- Only a regular file is a copy. Anything else under a block's name (a FIFO, a device,
  a directory, a symbolic link) is skipped by lookups and never read; a write of that
  block renames it aside (``durable``). Nothing below a data directory's root is
  reached through a link.
- No read of one copy takes more than ``max_encoded_size(max_block_size)`` bytes: a
  larger file is corrupt, whatever its ``stat`` or its content says.
- An existing copy is kept (after verifying it: a corrupt one is quarantined and
  replaced), except that a compressed copy replaces a plain one (``copydecision``).
  Keeping a copy still refreshes its mtime: the mtime is the "last written" time that
  protects a freshly put block from garbage collection (see ``_core/resync.py``).
- A copy failing verification is renamed to ``<name>.corrupted`` (or ``.zst.corrupted``).
- Deletion first renames the copy to a temp name (so it vanishes atomically from lookups)
  and then unlinks it. Temp names left by a crash are removed by :meth:`sweep_temps`
  in the background (or :meth:`cleanup_temps_sync` in one go); a temp file being
  written is never removed.
- Read-only data directories (``layout.read_only``) are read and never modified: no
  marker written, no temp cleanup, no mtime refresh, quarantine or deletion there. A
  write of a block whose only copy is read-only writes a fresh copy to the primary.

Every ``*_sync`` method blocks and runs in a worker thread through ``run_blocking``;
async methods take the block's mutation lock where they mutate, and ``*_locked``
variants exist for callers that already hold it.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from .._core.block import BlockHeader, DataBlock, decode_block
from .._core.datalayout import DataLayout
from .._core.disk import Disk, NotABlockFile
from .._core.hashing import Hash
from ..errors import CorruptBlockError
from .batching import TripBatcher
from .dirhealth import DirHealthBook
from .dirwalk import iter_block_files
from .durable import DirSyncs, LiveTemps, Placed, UnsyncedDirs, place_copy
from .fileops import read_bounded
from .groupwrite import GroupWriter
from .locks import KeyedLock
from .lookup import find_copy, read_first_copy
from .markers import prepare_dirs
from .paths import (
    BLOCK_NAME_RE,
    MARKER_NAME,
    TMP_SUFFIX_RE,
    BlockLocation,
    block_path,
    block_subdir,
    split_block_path,
    subdir_names,
    temp_name,
)
from .reading import (
    WHOLE_FILE_VERIFY,
    FileChunks,
    open_location,
    size_limit,
    verify_location,
)
from .realdisk import RealDisk
from .removal import detach, quarantine_copy, unlink_copy
from .stored import StoredTally, counted, hash_arg, loc_arg, path_arg
from .sweep import sweep_all, sweep_all_sync
from .threads import run_blocking
from .writepath import GroupItem, WriteOutcome, write_block_sync, write_group_sync

log = logging.getLogger("trioblock.storage")

#: Write trips under way at once (the writes waiting meanwhile form the next groups).
WRITE_TRIPS = 2


class BlockStore:
    """The block files of one node, over one or several data directories."""

    def __init__(
        self,
        layout: DataLayout,
        *,
        compression: bool,
        fsync: bool,
        limiter: trio.CapacityLimiter,
        max_block_size: int,
        disk: Disk | None = None,
    ) -> None:
        self.layout = layout
        #: every file operation goes through it (None: the real disk)
        self.disk: Disk = RealDisk() if disk is None else disk
        self.compression = compression
        self.fsync = fsync
        self.limiter = limiter
        self.max_block_size = max_block_size
        self.locks = KeyedLock()
        #: temp files being written (never removed by a sweep)
        self.live_temps = LiveTemps()
        #: ``aa/bb`` directories whose fsync failed (their copies are written again)
        self.unsynced_dirs = UnsyncedDirs()
        #: counts copies: see ``stored`` and ``@counted``
        self.stored = StoredTally(layout, self.disk)
        self.read_only_roots = frozenset(str(d) for d in layout.read_only_dirs)
        #: ok / full / failing per data directory (see ``dirhealth``)
        self.health = DirHealthBook(layout.dir_names, self.disk, margin=max_block_size)
        #: lookup order of the encodings
        self.order = (
            (BlockHeader.COMPRESSED, BlockHeader.PLAIN)
            if compression
            else (BlockHeader.PLAIN, BlockHeader.COMPRESSED)
        )
        # Concurrent reads share worker-thread trips (see ``batching``).
        self._reads: TripBatcher[Hash, Any] = TripBatcher(
            limiter=limiter, max_trips=max(1, int(min(limiter.total_tokens, 64)))
        )
        # Concurrent writes share trips and directory fsyncs (``groupwrite``).
        self.writes: GroupWriter[GroupItem, WriteOutcome] = GroupWriter(
            limiter=limiter, max_trips=max(1, min(int(limiter.total_tokens), WRITE_TRIPS))
        )

    def size_limit(self, header: BlockHeader) -> int:
        """The most bytes read from one copy in ``header``'s encoding."""
        return size_limit(header, self.max_block_size)

    # -- directories and markers --------------------------------------------------------

    def prepare_dirs_sync(self, known: dict[str, str], node_id: str) -> dict[str, str]:
        """Create missing directories and check their markers (see ``markers``)."""
        return prepare_dirs(self.disk, self.layout, known, node_id)

    def write_order(self, hash: Hash) -> list[str]:
        """The writable directories in the order a new copy of ``hash`` tries them:
        its primary first (``dirhealth`` picks among them)."""
        return [r for r in self.layout.search_roots(hash) if r not in self.read_only_roots]

    def counts_for_nothing(self, root: str) -> bool:
        """Whether a copy in ``root`` cannot stand for a fresh write: the directory is
        read-only (its mtime cannot be refreshed) or failing (it is not trusted)."""
        return root in self.read_only_roots or self.health.failing(root)

    def in_read_only_dir(self, path: Path | str) -> bool:
        """Whether a block file's path lies in a read-only data directory."""
        try:
            root = split_block_path(str(path))[0]
        except ValueError:
            return False
        return self.layout.is_read_only(Path(root))

    # -- lookups ------------------------------------------------------------------------

    def find_sync(self, hash: Hash) -> BlockLocation | None:
        """The first copy of ``hash`` in lookup order (regular files only), or None."""
        return find_copy(
            self.disk, self.layout.search_roots(hash), hash, self.order, self.health.failed
        )

    async def find(self, hash: Hash) -> BlockLocation | None:
        return await run_blocking(self.find_sync, hash, limiter=self.limiter)

    async def exists(self, hash: Hash) -> bool:
        return await self.find(hash) is not None

    # -- reading ------------------------------------------------------------------------

    def read_raw_sync(self, hash: Hash) -> tuple[DataBlock, BlockLocation] | None:
        """The encoded bytes of the first copy, unverified, or None when there is none.

        A copy larger than its encoding's limit raises ``CorruptBlockError`` (with its
        ``location``) without being read.
        """
        found = read_first_copy(
            self.disk,
            self.layout.search_roots(hash),
            hash,
            self.order,
            self.max_block_size,
            self.health.failed,
        )
        if found is not None:
            self.health.read(found[1].path_str.rsplit("/", 3)[0])
        return found

    def read_verified_sync(self, hash: Hash) -> tuple[bytes, DataBlock, BlockLocation] | None:
        """Read and verify the first copy: (plaintext, encoded, where) or None if absent.

        Raises ``CorruptBlockError`` (with its ``location``) when the copy fails.
        """
        found = self.read_raw_sync(hash)
        if found is None:
            return None
        block, loc = found
        try:
            plaintext = decode_block(hash, block, max_size=self.max_block_size)
        except CorruptBlockError as exc:
            exc.location = loc
            raise
        return plaintext, block, loc

    def verify_file_sync(self, loc: BlockLocation) -> bool:
        """Whether the file at ``loc`` is a valid copy (False when it is gone or over
        the size limit); ``NotABlockFile`` (an ``OSError``) when it is not a file."""
        return verify_location(self.disk, loc, self.max_block_size)

    def verify_files_sync(self, locs: list[BlockLocation]) -> list[bool | OSError]:
        """:meth:`verify_file_sync` for a batch (one thread trip); OSErrors are returned."""
        results: list[bool | OSError] = []
        for loc in locs:
            try:
                results.append(self.verify_file_sync(loc))
            except OSError as exc:
                results.append(exc)
        return results

    async def read_raw(self, hash: Hash) -> tuple[DataBlock, BlockLocation] | None:
        """:meth:`read_raw_sync` in a worker thread (concurrent reads share trips)."""
        found: tuple[DataBlock, BlockLocation] | None
        found = await self._reads.call(self.read_raw_sync, hash)
        return found

    async def read_verified(self, hash: Hash) -> tuple[bytes, DataBlock, BlockLocation] | None:
        """Verified plaintext of the local copy; quarantines it and raises if corrupt.

        Concurrent reads share worker-thread trips (see ``batching``)."""
        try:
            found: tuple[bytes, DataBlock, BlockLocation] | None
            found = await self._reads.call(self.read_verified_sync, hash)
            return found
        except CorruptBlockError as exc:
            if isinstance(exc.location, BlockLocation):
                await self.quarantine(exc.location)
            raise

    @asynccontextmanager
    async def open_stream(self, loc: BlockLocation) -> AsyncIterator[FileChunks]:
        """The encoded file at ``loc`` as chunks read in worker threads; closed on exit.

        ``FileNotFoundError`` when the copy is gone, ``NotABlockFile`` when it is not a
        regular file; the chunks stop with ``CorruptBlockError`` past the size limit.
        Another ``OSError`` of the open counts towards the directory's health.
        """
        try:
            fd, _st = await run_blocking(open_location, self.disk, loc, limiter=self.limiter)
        except (FileNotFoundError, NotABlockFile):
            raise
        except OSError as exc:
            self.health.failed(loc.path_str.rsplit("/", 3)[0], exc)
            raise
        try:
            yield FileChunks(self.disk, fd, self.limiter, loc.hash, self.size_limit(loc.header))
        finally:
            with trio.CancelScope(shield=True):
                await run_blocking(self.disk.close, fd, limiter=self.limiter)

    def read_file_sync(self, loc: BlockLocation) -> tuple[DataBlock, os.stat_result] | None:
        """The encoded bytes of the copy at ``loc``, unverified, with its ``fstat``; None
        when it is gone or not a regular file, ``CorruptBlockError`` (unread) past its
        size limit."""
        try:
            fd, st = open_location(self.disk, loc)
        except (FileNotFoundError, NotABlockFile):
            return None
        try:
            payload = read_bounded(self.disk, fd, st.st_size, self.size_limit(loc.header))
        finally:
            self.disk.close(fd)
        if payload is None:
            raise CorruptBlockError(loc.hash, f"{loc.path} is over the size limit", location=loc)
        return DataBlock(loc.header, payload), st

    # -- writing ------------------------------------------------------------------------

    @counted(hash_arg(1))
    def place_sync(
        self,
        root: Path | str,
        hash: Hash,
        block: DataBlock,
        mtime_ns: int,
        *,
        syncs: DirSyncs | None = None,
    ) -> Placed:
        """Durably store ``block`` in ``root`` unless an equal or better copy is there.

        The one durable write (see ``durable``), used by puts and rebalance moves. The
        caller holds the block's lock and has verified ``block``. ``syncs``: its group
        of writes (``writepath``).
        """
        return self.place_copy_sync(root, hash, block, mtime_ns, syncs=syncs)

    def place_copy_sync(
        self,
        root: Path | str,
        hash: Hash,
        block: DataBlock,
        mtime_ns: int,
        *,
        syncs: DirSyncs | None = None,
    ) -> Placed:
        """:meth:`place_sync` for a caller that counts the change itself."""
        if str(root) in self.read_only_roots:
            raise ValueError(f"{root} is a read-only data directory")
        return place_copy(
            self.disk,
            str(root),
            hash,
            block,
            mtime_ns,
            fsync=self.fsync,
            live=self.live_temps,
            unsynced=self.unsynced_dirs,
            syncs=syncs,
        )

    def write_sync(self, hash: Hash, block: DataBlock, written_at_msec: int) -> WriteOutcome:
        """Durably store ``block`` unless an equal or better copy exists: the write path
        of ``writepath``. The caller holds the block's lock and has verified ``block``."""
        return write_block_sync(self, hash, block, written_at_msec)

    @counted(path_arg)
    def remove_copy_sync(self, path: str) -> bool:
        """Unlink the copy at ``path`` and fsync its directory; False when it is gone,
        not a regular file, or in a read-only directory."""
        if self.in_read_only_dir(path):
            return False
        try:
            removed = unlink_copy(self.disk, path, fsync=self.fsync)
        except OSError as exc:
            log.warning("could not remove superseded copy %s: %s", path, exc)
            return False
        if removed:
            self.health.freed(path.rsplit("/", 3)[0])
        return removed

    def try_write_sync(
        self,
        hash: Hash,
        block: DataBlock,
        written_at_msec: int,
        token: trio.lowlevel.TrioToken,
    ) -> WriteOutcome | None:
        """:meth:`write_sync` from a worker thread that does not hold the block's lock:
        done under a claim of the lock (see ``locks``) when nobody holds or waits for
        it; None, nothing done, otherwise (the caller then takes the lock)."""
        if not self.locks.try_claim(hash):
            return None
        try:
            return self.write_sync(hash, block, written_at_msec)
        finally:
            self.locks.release_claim(hash, token)

    async def write_block_locked(
        self, hash: Hash, block: DataBlock, written_at_msec: int, *, verify: bool = False
    ) -> WriteOutcome:
        """:meth:`write_sync` in one worker trip with the writes waiting meanwhile
        (``groupwrite``); ``verify``: as :meth:`write_verified_block`. Lock held."""
        return await self.writes.call(
            functools.partial(write_group_sync, self), (hash, block, written_at_msec, verify)
        )

    async def write_block(self, hash: Hash, block: DataBlock, written_at_msec: int) -> WriteOutcome:
        async with self.locks.hold(hash):
            return await self.write_block_locked(hash, block, written_at_msec)

    async def write_verified_block(
        self, hash: Hash, block: DataBlock, written_at_msec: int
    ) -> WriteOutcome:
        """Verify an untrusted ``block`` against ``hash`` (``CorruptBlockError``, nothing
        touched, when it does not match), then write it: under the block's lock, in one
        worker-thread trip (with the other writes waiting at the same moment)."""
        async with self.locks.hold(hash):
            return await self.write_block_locked(hash, block, written_at_msec, verify=True)

    # -- quarantine and deletion -----------------------------------------------------------

    @counted(loc_arg)
    def quarantine_sync(self, loc: BlockLocation) -> Path | None:
        """Rename a copy that still fails verification to ``*.corrupted``.

        Never in a read-only directory (None then, as when the copy is valid, gone or
        not a regular file).
        """
        if self.in_read_only_dir(loc.path_str):
            log.warning("block %s is corrupt in read-only %s: left there", loc.hash.hex(), loc.path)
            return None
        try:
            if self.verify_file_sync(loc):
                return None
        except NotABlockFile:
            return None
        target = quarantine_copy(self.disk, loc.path_str, fsync=self.fsync)
        if target is None:
            return None
        log.warning("block %s is corrupt: moved to %s", loc.hash.hex(), target)
        return Path(target)

    async def quarantine_locked(self, loc: BlockLocation) -> Path | None:
        return await run_blocking(self.quarantine_sync, loc, limiter=self.limiter)

    async def quarantine(self, loc: BlockLocation) -> Path | None:
        async with self.locks.hold(loc.hash):
            return await self.quarantine_locked(loc)

    @counted(loc_arg)
    def detach_now(self, loc: BlockLocation) -> Path | None:
        """Rename a copy to a temp name, *on the calling thread*; None if it is gone.

        This is the only filesystem work trioblock does on the Trio thread, on purpose:
        the node checks the reference count and detaches the file in one uninterrupted
        step, so that a synchronous ``incref`` can never slip in between (opening two
        cached directories and one rename take microseconds).
        A copy in a read-only directory, or anything but a regular file, is never
        touched (None, as if gone).
        """
        if self.in_read_only_dir(loc.path_str):
            return None
        trash = detach(self.disk, loc.path_str)
        return None if trash is None else Path(trash)

    def discard_sync(self, trash: Path) -> None:
        """Unlink a detached copy (fsyncing its directory); nothing if it is gone. When
        that fails, the directory is marked in ``unsynced_dirs`` (the unlink, or the
        rename before it, may come undone at a power cut)."""
        try:
            removed = unlink_copy(self.disk, str(trash), fsync=self.fsync)
        except OSError:
            if self.fsync:
                self.unsynced_dirs.add(str(trash).rsplit("/", 1)[0])
            raise
        if removed:
            self.health.freed(str(trash).rsplit("/", 3)[0])

    def absence_is_durable(self, hash: Hash) -> bool:
        """Whether "no copy of ``hash`` here" would survive a power cut: not while one of
        its ``aa/bb`` directories had a failed fsync in this process (fsyncgate)."""
        aa, bb = subdir_names(hash)
        return not any(
            f"{root}/{aa}/{bb}" in self.unsynced_dirs for root in self.layout.search_roots(hash)
        )

    async def discard(self, trash: Path) -> None:
        await run_blocking(self.discard_sync, trash, limiter=self.limiter)

    # -- stale temp files -------------------------------------------------------------------

    def cleanup_temps_sync(self) -> int:
        """Remove temp files left by a crash in every writable data directory, in one
        blocking pass; the count. Prefer :meth:`sweep_temps`."""
        return sweep_all_sync(self.disk, self.layout, self.live_temps)

    async def sweep_temps(self) -> int:
        """Remove stale temp files in the background, a bounded step per worker-thread
        trip (safe to cancel between trips; temp files of writes in progress are left
        alone), then count the copies (``stored``). The number removed; logged by the
        node, with its id."""
        removed = await sweep_all(self.disk, self.layout, self.live_temps, self.limiter)
        await self.stored.rebuild(self.limiter)
        return removed


__all__ = [
    "BLOCK_NAME_RE",
    "MARKER_NAME",
    "TMP_SUFFIX_RE",
    "WHOLE_FILE_VERIFY",
    "BlockLocation",
    "BlockStore",
    "FileChunks",
    "WriteOutcome",
    "block_path",
    "block_subdir",
    "iter_block_files",
    "temp_name",
]
