"""Block files in data directories: the node's ``BlockStore``.

Rules kept here (the names are in ``paths``, the durable write in ``durable``, the walk
in ``walk``, markers in ``markers``, link-free file access in ``nofollow``):

- Lookup order: with compression on, ``.zst`` before plain; with it off, plain before
  ``.zst``; the primary directory of the block's partition before its secondaries.
- Only a regular file is a copy. Anything else under a block's name (a FIFO, a device,
  a directory, a symbolic link) is skipped by lookups and never read; a write of that
  block renames it aside (``durable``). Nothing below a data directory's root is
  reached through a link.
- No read of one copy takes more than ``max_encoded_size(max_block_size)`` bytes: a
  larger file is corrupt, whatever its ``stat`` or its content says.
- An existing copy is kept (after verifying it: a corrupt one is quarantined and
  replaced), except that a compressed copy replaces a plain one. Keeping a copy still
  refreshes its mtime: the mtime is the "last written" time that protects a
  freshly put block from garbage collection (see ``_core/resync.py``).
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

import enum
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from .._core.block import BlockHeader, DataBlock, decode_block
from .._core.datalayout import DataLayout
from .._core.hashing import Hash
from ..errors import CorruptBlockError
from .batching import TripBatcher
from .durable import LiveTemps, Placed, place_copy, place_in, refresh_mtime, supersedes
from .locks import KeyedLock
from .lookup import find_copy, is_regular, read_first_copy
from .markers import prepare_dirs
from .nofollow import DataRoots, NotABlockFile, make_subdir_created, regular_at
from .offload import run_blocking
from .paths import (
    BLOCK_NAME_RE,
    MARKER_NAME,
    TMP_SUFFIX_RE,
    BlockLocation,
    block_name,
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
from .removal import detach, quarantine_copy, unlink_copy
from .stored import SeenDir, StoredTally, close_seen, counted, hash_arg, loc_arg, path_arg
from .sweep import sweep_entries
from .walk import iter_block_files, walk_data_dir

log = logging.getLogger("trioblock.storage")

#: Entries of the tree looked at per worker-thread trip of the background temp sweep.
SWEEP_BATCH = 512


class WriteOutcome(enum.Enum):
    WRITTEN = "written"
    KEPT = "kept"
    REPLACED = "replaced"


_OUTCOMES = {
    Placed.KEPT: WriteOutcome.KEPT,
    Placed.WRITTEN: WriteOutcome.WRITTEN,
    Placed.REPLACED: WriteOutcome.REPLACED,
}


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
    ) -> None:
        self.layout = layout
        self.compression = compression
        self.fsync = fsync
        self.limiter = limiter
        self.max_block_size = max_block_size
        self.locks = KeyedLock()
        self._live = LiveTemps()
        #: each data directory's root, opened once (closed with the store)
        self._roots = DataRoots()
        #: counts copies: see ``stored`` and ``@counted``
        self.stored = StoredTally(layout, self._roots)
        self._read_only_roots = frozenset(str(d) for d in layout.read_only_dirs)
        self._order = (
            (BlockHeader.COMPRESSED, BlockHeader.PLAIN)
            if compression
            else (BlockHeader.PLAIN, BlockHeader.COMPRESSED)
        )
        # Concurrent reads share worker-thread trips (see ``batching``).
        self._reads: TripBatcher[Hash, Any] = TripBatcher(
            limiter=limiter, max_trips=max(1, int(min(limiter.total_tokens, 64)))
        )

    def size_limit(self, header: BlockHeader) -> int:
        """The most bytes read from one copy in ``header``'s encoding."""
        return size_limit(header, self.max_block_size)

    # -- directories and markers --------------------------------------------------------

    def prepare_dirs_sync(self, known: dict[str, str], node_id: str) -> dict[str, str]:
        """Create missing directories and check their markers (see ``markers``)."""
        return prepare_dirs(self.layout, known, node_id, fsync=self.fsync)

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
        return find_copy(self.layout.candidate_roots(hash), hash, self._order, self._roots)

    async def find(self, hash: Hash) -> BlockLocation | None:
        return await run_blocking(self.find_sync, hash, limiter=self.limiter)

    async def exists(self, hash: Hash) -> bool:
        return await self.find(hash) is not None

    # -- reading ------------------------------------------------------------------------

    def read_raw_sync(self, hash: Hash) -> tuple[DataBlock, BlockLocation] | None:
        """The encoded bytes of the first copy, unverified, or None when there is none.

        A copy larger than its encoding's limit raises ``CorruptBlockError`` (with a
        ``location`` attribute) without being read.
        """
        return read_first_copy(
            self.layout.candidate_roots(hash),
            hash,
            self._order,
            self.max_block_size,
            self._roots,
        )

    def read_verified_sync(self, hash: Hash) -> tuple[bytes, DataBlock, BlockLocation] | None:
        """Read and verify the first copy: (plaintext, encoded, where) or None if absent.

        Raises ``CorruptBlockError`` (with a ``location`` attribute) when the copy fails.
        """
        found = self.read_raw_sync(hash)
        if found is None:
            return None
        block, loc = found
        try:
            plaintext = decode_block(hash, block, max_size=self.max_block_size)
        except CorruptBlockError as exc:
            exc.location = loc  # type: ignore[attr-defined]
            raise
        return plaintext, block, loc

    def verify_file_sync(self, loc: BlockLocation) -> bool:
        """Whether the file at ``loc`` is a valid copy (False when it is gone or over
        the size limit); ``NotABlockFile`` (an ``OSError``) when it is not a file."""
        return verify_location(loc, self.max_block_size, self._roots)

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
            loc: BlockLocation | None = getattr(exc, "location", None)
            if loc is not None:
                await self.quarantine(loc)
            raise

    @asynccontextmanager
    async def open_stream(self, loc: BlockLocation) -> AsyncIterator[FileChunks]:
        """The encoded file at ``loc`` as chunks read in worker threads; closed on exit.

        ``FileNotFoundError`` when the copy is gone, ``NotABlockFile`` when it is not a
        regular file; the chunks stop with ``CorruptBlockError`` past the size limit.
        """
        fd, _st = await run_blocking(open_location, loc, self._roots, limiter=self.limiter)
        try:
            yield FileChunks(fd, self.limiter, loc.hash, self.size_limit(loc.header))
        finally:
            with trio.CancelScope(shield=True):
                await run_blocking(os.close, fd, limiter=self.limiter)

    # -- writing ------------------------------------------------------------------------

    @counted(hash_arg(1))
    def place_sync(self, root: Path | str, hash: Hash, block: DataBlock, mtime_ns: int) -> Placed:
        """Durably store ``block`` in ``root`` unless an equal or better copy is there.

        The one durable write (see ``durable``), used by puts and rebalance moves. The
        caller holds the block's lock and has verified ``block``.
        """
        return self.place_copy_sync(root, hash, block, mtime_ns)

    def place_copy_sync(
        self, root: Path | str, hash: Hash, block: DataBlock, mtime_ns: int
    ) -> Placed:
        """:meth:`place_sync` for a caller that counts the change itself."""
        if str(root) in self._read_only_roots:
            raise ValueError(f"{root} is a read-only data directory")
        return place_copy(
            str(root),
            hash,
            block,
            mtime_ns,
            fsync=self.fsync,
            live=self._live,
            roots=self._roots,
        )

    def write_sync(self, hash: Hash, block: DataBlock, written_at_msec: int) -> WriteOutcome:
        """Durably store ``block`` unless an equal or better copy exists (see module rules).

        A copy in a read-only directory does not count: its mtime cannot be refreshed,
        so the block is written to its primary directory as if it were absent.
        The caller holds the block's lock and has verified ``block``.

        Counted like the ``@counted`` methods; a new block (the common case) is written
        on what the tally's "before" look saw (its ``aa/bb`` descriptor and the
        ``lstat`` of both names), without looking again.
        """
        seen = self.stored.begin_seen(hash)
        effect: tuple[int, int] | None = None
        try:
            if seen is not None:
                done = self._write_new(hash, block, written_at_msec * 1_000_000, seen)
                if done is not None:
                    outcome, effect = done
                    return outcome
            return self._write_sync(hash, block, written_at_msec)
        finally:
            if seen is not None:
                close_seen(seen)
            self.stored.end(hash, effect)

    def _write_new(
        self, hash: Hash, block: DataBlock, mtime_ns: int, seen: list[SeenDir]
    ) -> tuple[WriteOutcome, tuple[int, int] | None] | None:
        """Write ``block`` when no usable copy was seen (None, nothing done, otherwise)."""
        by_root = {d.root: d for d in seen}
        for root in self.layout.candidate_roots(hash):
            where = by_root[root]
            for header in self._order:
                st = where.stats[0 if header is BlockHeader.COMPRESSED else 1]
                if st is None:
                    continue
                aa, bb = subdir_names(hash)
                if is_regular(st.st_mode, f"{root}/{aa}/{bb}/{block_name(hash, header)}"):
                    if root not in self._read_only_roots:
                        return None  # a copy to keep, verify or replace
                    break  # a read-only copy counts for nothing
        primary = self.layout.candidate_roots(hash)[0]
        where = by_root[primary]
        if where.fd is None and not where.missing:  # not a directory: place_copy says so
            return self._outcome(self.place_copy_sync(primary, hash, block, mtime_ns)), None
        aa, bb = subdir_names(hash)
        stats: tuple[os.stat_result | None, ...] | None = where.stats
        if where.fd is None:
            # ``aa/bb`` was absent: made now (empty when made by this call).
            where.fd, created = make_subdir_created(
                primary, aa, bb, fsync=self.fsync, roots=self._roots
            )
            if not created:
                stats = None  # made meanwhile by another write: look again
        placed, effect = place_in(
            where.fd,
            f"{primary}/{aa}/{bb}",
            hash,
            block,
            mtime_ns,
            fsync=self.fsync,
            live=self._live,
            seen=stats,
        )
        return self._outcome(placed), effect

    @staticmethod
    def _outcome(placed: Placed) -> WriteOutcome:
        return _OUTCOMES[placed]

    def _write_sync(self, hash: Hash, block: DataBlock, written_at_msec: int) -> WriteOutcome:
        mtime_ns = written_at_msec * 1_000_000
        existing = self.find_sync(hash)
        if existing is not None and self.in_read_only_dir(existing.path_str):
            existing = None
        if existing is not None and not self.verify_file_sync(existing):
            # A put is a chance to heal: a corrupt copy is quarantined, not kept.
            self.quarantine_sync(existing)
            existing = None
        if existing is not None and not supersedes(block.header, existing.header):
            if mtime_ns > existing.mtime_ns:
                with regular_at(existing.path_str, self._roots) as found:
                    if found is not None:
                        refresh_mtime(*found, mtime_ns)
            return WriteOutcome.KEPT
        placed = self.place_sync(self.layout.primary_dir(hash), hash, block, mtime_ns)
        if placed is Placed.KEPT:
            return WriteOutcome.KEPT
        if existing is not None:
            # The plain copy the new one supersedes (if not already gone with it).
            self.remove_copy_sync(existing.path_str)
            return WriteOutcome.REPLACED
        return WriteOutcome.REPLACED if placed is Placed.REPLACED else WriteOutcome.WRITTEN

    @counted(path_arg)
    def remove_copy_sync(self, path: str) -> bool:
        """Unlink the copy at ``path`` and fsync its directory; False when it is gone,
        not a regular file, or in a read-only directory."""
        if self.in_read_only_dir(path):
            return False
        try:
            return unlink_copy(path, fsync=self.fsync, roots=self._roots)
        except OSError as exc:
            log.warning("could not remove superseded copy %s: %s", path, exc)
            return False

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
        self, hash: Hash, block: DataBlock, written_at_msec: int
    ) -> WriteOutcome:
        return await run_blocking(
            self.write_sync, hash, block, written_at_msec, limiter=self.limiter
        )

    async def write_block(self, hash: Hash, block: DataBlock, written_at_msec: int) -> WriteOutcome:
        async with self.locks.hold(hash):
            return await self.write_block_locked(hash, block, written_at_msec)

    def write_verified_sync(
        self, hash: Hash, block: DataBlock, written_at_msec: int
    ) -> WriteOutcome:
        """Verify an untrusted ``block`` against ``hash``, then :meth:`write_sync` it.

        ``CorruptBlockError`` (nothing touched) when it does not match. One worker-thread
        trip for a block received from a peer; the caller holds the block's lock.
        """
        decode_block(hash, block, max_size=self.max_block_size)
        return self.write_sync(hash, block, written_at_msec)

    async def write_verified_block(
        self, hash: Hash, block: DataBlock, written_at_msec: int
    ) -> WriteOutcome:
        """:meth:`write_verified_sync` under the block's lock, in a worker thread."""
        async with self.locks.hold(hash):
            return await run_blocking(
                self.write_verified_sync, hash, block, written_at_msec, limiter=self.limiter
            )

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
        target = quarantine_copy(loc.path_str, fsync=self.fsync, roots=self._roots)
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
        trash = detach(loc.path_str, self._roots)
        return None if trash is None else Path(trash)

    def discard_sync(self, trash: Path) -> None:
        """Unlink a detached copy (fsyncing its directory); nothing if it is gone."""
        unlink_copy(str(trash), fsync=self.fsync, roots=self._roots)

    async def discard(self, trash: Path) -> None:
        await run_blocking(self.discard_sync, trash, limiter=self.limiter)

    async def delete_locked(self, loc: BlockLocation) -> bool:
        trash = self.detach_now(loc)
        if trash is None:
            return False
        await self.discard(trash)
        return True

    # -- stale temp files -------------------------------------------------------------------

    def cleanup_temps_sync(self) -> int:
        """Remove temp files left by a crash in every data directory; return the count.

        One pass over every file, blocking: prefer :meth:`sweep_temps`, which does the
        same in the background in bounded steps.
        """
        removed = 0
        for root in self.layout.dirs:
            if not self.layout.is_read_only(root):
                removed += sweep_entries(walk_data_dir(root, stat=False), self._live)[0]
        return removed

    async def sweep_temps(self) -> int:
        """Remove stale temp files of every writable data directory, in the background.

        Works through the tree ``SWEEP_BATCH`` entries per worker-thread trip, so that
        a node is ready at once whatever it stores; temp files of writes in progress are
        left alone. Safe to cancel between trips. Returns the number removed.
        """
        removed = 0
        for root in self.layout.dirs:
            if self.layout.is_read_only(root):
                continue
            entries = walk_data_dir(root, stat=False)
            more = True
            while more:
                n, more = await run_blocking(
                    sweep_entries, entries, self._live, SWEEP_BATCH, limiter=self.limiter
                )
                removed += n
        # Logged by the node, with its id (``lifecycle._sweep``).
        await self.stored.rebuild(self.limiter)  # then count the copies (``stored``)
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
