"""The one durable write of a block copy, used by a put and by a rebalance move.

Rules kept here:

- A copy is written to ``<name>.tmp<8 hex>`` in its final ``aa/bb`` directory: write,
  set mtime, fsync, rename, fsync the directory (the fsyncs only with ``data_fsync``).
  A failure or cancellation at any point removes the temp file; nothing is ever visible
  under a final name before it is complete. New ``aa`` and ``aa/bb`` directories are
  fsynced into their parents.
- What happens to the copies there is ``_core.copydecision.decide`` ("compressed
  replaces plain"): a kept copy's mtime is moved forward to the new "last written"
  time, never back; superseded copies are removed once the new one is in place.
- Something that is not a regular file under the copy's name (a FIFO, a link, a
  directory...) is not a copy: it is renamed aside to ``<name>.corrupted`` (a link is
  renamed, never followed) and the copy is written in its place.
- In a group of writes (:class:`DirSyncs`) the directory fsync is deferred: each
  ``aa/bb`` directory changed by the group is fsynced once at its end, before any of
  its writes is acknowledged, and a failed fsync fails exactly the writes renamed into
  that directory (:func:`sync_group_dirs`).
- Temp names being written are registered in :class:`LiveTemps` for their lifetime, so
  that a sweep of stale temp files running meanwhile never removes one.

Every file operation goes through the node's ``Disk``. Every function blocks (a worker
thread); callers hold the block's mutation lock.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import logging
import os
import secrets
import stat

from .._core.block import BlockHeader, DataBlock
from .._core.copydecision import Existing, decide
from .._core.disk import Disk, Handle
from .._core.hashing import Hash
from .fileops import write_all
from .nofollow import describe_mode
from .paths import block_name, quarantine_name, subdir_names, temp_suffix

log = logging.getLogger("trioblock.storage")

#: Temp names drawn before giving up when each is taken (by another writer).
TEMP_NAME_TRIES = 4


class Placed(enum.Enum):
    WRITTEN = "written"  # a new copy, nothing was there
    REPLACED = "replaced"  # a new compressed copy, the plain one there removed
    KEPT = "kept"  # an equal or better copy was there already


class LiveTemps:
    """Temp file names being written by this process (thread-safe under the GIL).

    A name holds the block's hash and 8 random hex digits: unique without its directory.
    """

    def __init__(self) -> None:
        self._names: set[str] = set()

    def add(self, path: str) -> None:
        self._names.add(path)

    def discard(self, path: str) -> None:
        self._names.discard(path)

    def __contains__(self, path: object) -> bool:
        return path in self._names


class UnsyncedDirs:
    """``aa/bb`` directories whose fsync failed in this process (thread-safe under the
    GIL).

    After a failed fsync the kernel may have dropped the pending changes and report the
    next fsync as a success ("fsyncgate"): a name renamed into such a directory can
    vanish at the next power cut while it is still visible now. A copy found there is
    never kept as a put's durable write: it is written again (and the directory synced).
    The mark lasts as long as the process.
    """

    def __init__(self) -> None:
        self._dirs: set[str] = set()

    def add(self, dir_path: str) -> None:
        self._dirs.add(dir_path)

    def __contains__(self, dir_path: object) -> bool:
        return dir_path in self._dirs


class DirSyncs:
    """The ``aa/bb`` directories a group of writes changed, to fsync once at its end.

    ``current`` is the index of the write under way; :meth:`add` records that it renamed
    or removed a name in a directory (whose fsync it then waits for).
    """

    def __init__(self) -> None:
        self.current = 0
        #: directory shown as ``root/aa/bb`` -> indices of the writes that changed it
        self.dirs: dict[str, list[int]] = {}

    def add(self, dir_path: str) -> None:
        self.dirs.setdefault(dir_path, []).append(self.current)


def sync_group_dirs(
    disk: Disk, syncs: DirSyncs, unsynced: UnsyncedDirs
) -> list[tuple[str, list[int], OSError]]:
    """Fsync every directory of ``syncs`` once; the ones that failed (marked in
    ``unsynced``: fsyncgate), with the writes they concern and the error."""
    failed: list[tuple[str, list[int], OSError]] = []
    for shown, which in syncs.dirs.items():
        root, aa, bb = shown.rsplit("/", 2)
        try:
            dir = disk.open_dir(root, f"{aa}/{bb}")
            try:
                disk.fsync(dir)
            finally:
                disk.close(dir)
        except OSError as exc:
            unsynced.add(shown)
            failed.append((shown, which, exc))
    return failed


def refresh_mtime(disk: Disk, dir: Handle, name: str, mtime_ns: int) -> None:
    """Move a kept copy's mtime forward to ``mtime_ns`` (never back); best effort."""
    try:
        st = disk.lstat_at(dir, name)
        if st is not None and st.st_mtime_ns < mtime_ns and stat.S_ISREG(st.st_mode):
            disk.set_mtime_at(dir, name, mtime_ns)
    except FileNotFoundError:
        pass
    except OSError as exc:
        if exc.errno not in (errno.EROFS, errno.EPERM, errno.EACCES):
            raise


def set_aside(disk: Disk, dir: Handle, name: str, shown: str) -> str | None:
    """Rename whatever is not a regular file at ``name`` to its quarantine name.

    Returns the new name, or None when ``name`` is absent or a regular file.
    """
    st = disk.lstat_at(dir, name)
    if st is None or stat.S_ISREG(st.st_mode):
        return None
    target = quarantine_name(name)
    if disk.lstat_at(dir, target) is not None:
        target = f"{name}.{secrets.token_hex(4)}{quarantine_name('')}"
    disk.rename_at(dir, name, target)
    log.warning(
        "%s is a %s, not a block file: renamed to %s", shown, describe_mode(st.st_mode), target
    )
    return target


def write_new_file(
    disk: Disk,
    dir: Handle,
    name: str,
    payload: bytes,
    mtime_ns: int,
    *,
    fsync: bool,
    live: LiveTemps,
) -> None:
    """Write ``name`` in ``dir`` through a temp file and a rename.

    The file is fsynced (with ``fsync``) but not its directory: the caller does that
    once it has finished changing the directory.
    """
    for attempt in range(TEMP_NAME_TRIES):
        tmp = name + temp_suffix()
        live.add(tmp)
        try:
            try:
                file = disk.create_at(dir, tmp)
            except FileExistsError:
                if attempt + 1 == TEMP_NAME_TRIES:
                    raise
                continue  # another writer's temp name (a different process): draw again
            try:
                try:
                    write_all(disk, file, payload)
                    disk.set_mtime(file, mtime_ns)
                    if fsync:
                        disk.fsync(file)
                finally:
                    disk.close(file)
                disk.rename_at(dir, tmp, name)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    disk.unlink_at(dir, tmp)
                raise
            return
        finally:
            live.discard(tmp)


def place_copy(
    disk: Disk,
    root: str,
    hash: Hash,
    block: DataBlock,
    mtime_ns: int,
    *,
    fsync: bool,
    live: LiveTemps,
    unsynced: UnsyncedDirs | None = None,
    syncs: DirSyncs | None = None,
) -> Placed:
    """Durably store ``block`` in ``root``'s ``aa/bb`` unless an equal or better copy
    is there (then its mtime is refreshed); a plain copy there is superseded by a
    compressed one. The caller holds the block's lock and has verified ``block``.
    """
    aa, bb = subdir_names(hash)
    try:
        dir = disk.open_dir(root, f"{aa}/{bb}")
    except FileNotFoundError:
        dir = disk.make_dir(root, f"{aa}/{bb}", fsync=fsync)[0]
    try:
        shown = f"{root}/{aa}/{bb}"
        return place_in(
            disk,
            dir,
            shown,
            hash,
            block,
            mtime_ns,
            fsync=fsync,
            live=live,
            unsynced=unsynced,
            syncs=syncs,
        )[0]
    finally:
        disk.close(dir)


def place_in(
    disk: Disk,
    dir: Handle,
    shown: str,
    hash: Hash,
    block: DataBlock,
    mtime_ns: int,
    *,
    fsync: bool,
    live: LiveTemps,
    seen: tuple[os.stat_result | None, ...] | None = None,
    unsynced: UnsyncedDirs | None = None,
    syncs: DirSyncs | None = None,
) -> tuple[Placed, tuple[int, int] | None]:
    """:func:`place_copy` into the open ``aa/bb`` directory ``dir`` (left open).

    ``seen``: the ``lstat`` of the ``.zst`` and plain names, just taken by the caller
    (None: looked at here). Returns what was done, with the copies and bytes it added
    when it went exactly as those ``lstat`` said (None when something else changed
    meanwhile). ``unsynced``: directories whose fsync failed (a copy there is written
    again rather than kept, and a failed fsync of ``dir`` is recorded there).
    ``syncs``: a group's directories (``dir``'s fsync is then left to the group's end).
    """
    name = block_name(hash, block.header)
    if seen is None:
        seen = (
            disk.lstat_at(dir, block_name(hash, BlockHeader.COMPRESSED)),
            disk.lstat_at(dir, block_name(hash, BlockHeader.PLAIN)),
        )
    zst, plain = seen
    mine = zst if block.header is BlockHeader.COMPRESSED else plain
    if mine is not None and not stat.S_ISREG(mine.st_mode):
        set_aside(disk, dir, name, f"{shown}/{name}")
    existing = [
        Existing(header, False, header)
        for header, st in ((BlockHeader.COMPRESSED, zst), (BlockHeader.PLAIN, plain))
        if st is not None and stat.S_ISREG(st.st_mode)
    ]
    suspect = fsync and unsynced is not None and shown in unsynced
    decision = decide(block.header, [] if suspect else existing)
    if decision.keep is not None:
        refresh_mtime(disk, dir, block_name(hash, decision.keep.header), mtime_ns)
        return Placed.KEPT, (0, 0)
    write_new_file(disk, dir, name, block.payload, mtime_ns, fsync=fsync, live=live)
    added: tuple[int, int] | None = (1, len(block.payload))
    replaced = False
    for old in decision.remove:
        added = None  # rare here (a caller seeing a copy takes another path): look again
        with contextlib.suppress(FileNotFoundError):
            disk.unlink_at(dir, block_name(hash, old.header))
            replaced = True
    if suspect:
        added = None  # written over a copy that was there: look again
    if fsync and syncs is not None:
        syncs.add(shown)
    elif fsync:
        try:
            disk.fsync(dir)
        except OSError:
            if unsynced is not None:
                unsynced.add(shown)
            raise
    return (Placed.REPLACED if replaced else Placed.WRITTEN), added


__all__ = [
    "DirSyncs",
    "LiveTemps",
    "Placed",
    "UnsyncedDirs",
    "place_copy",
    "place_in",
    "refresh_mtime",
    "set_aside",
    "sync_group_dirs",
    "write_new_file",
]
