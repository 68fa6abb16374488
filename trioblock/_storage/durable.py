"""The one durable write of a block copy, used by a put and by a rebalance move.

Rules kept here:

- A copy is written to ``<name>.tmp<8 hex>`` in its final ``aa/bb`` directory: write,
  set mtime, fsync, rename, fsync the directory (the fsyncs only with ``data_fsync``).
  A failure or cancellation at any point removes the temp file; nothing is ever visible
  under a final name before it is complete. New ``aa`` and ``aa/bb`` directories are
  fsynced into their parents.
- "Compressed replaces plain": a new copy supersedes an existing one only when it is
  compressed and the existing one plain (:func:`supersedes`); otherwise the existing
  copy is kept and its mtime moved forward to the new "last written" time, never back.
- Something that is not a regular file under the copy's name (a FIFO, a link, a
  directory...) is not a copy: it is renamed aside to ``<name>.corrupted`` (a link is
  renamed, never followed) and the copy is written in its place.
- Temp names being written are registered in :class:`LiveTemps` for their lifetime, so
  that a sweep of stale temp files running meanwhile never removes one.

Every function blocks (a worker thread); callers hold the block's mutation lock.
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
from .._core.hashing import Hash
from .nofollow import DataRoots, describe_mode, lstat_at, make_subdir, open_subdir, rename_at
from .paths import block_name, quarantine_name, subdir_names, temp_suffix

log = logging.getLogger("trioblock.storage")

_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
#: Temp names drawn before giving up when each is taken (by another writer).
TEMP_NAME_TRIES = 4


class Placed(enum.Enum):
    WRITTEN = "written"  # a new copy, nothing was there
    REPLACED = "replaced"  # a new compressed copy, the plain one there removed
    KEPT = "kept"  # an equal or better copy was there already


def supersedes(new: BlockHeader, existing: BlockHeader) -> bool:
    """Whether a copy in ``new``'s encoding replaces one in ``existing``'s."""
    return new is BlockHeader.COMPRESSED and existing is BlockHeader.PLAIN


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


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def refresh_mtime(dir_fd: int, name: str, mtime_ns: int) -> None:
    """Move a kept copy's mtime forward to ``mtime_ns`` (never back); best effort."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if st.st_mtime_ns < mtime_ns and stat.S_ISREG(st.st_mode):
            os.utime(name, ns=(mtime_ns, mtime_ns), dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        pass
    except OSError as exc:
        if exc.errno not in (errno.EROFS, errno.EPERM, errno.EACCES):
            raise


def set_aside(dir_fd: int, name: str, shown: str) -> str | None:
    """Rename whatever is not a regular file at ``name`` to its quarantine name.

    Returns the new name, or None when ``name`` is absent or a regular file.
    """
    st = lstat_at(dir_fd, name)
    if st is None or stat.S_ISREG(st.st_mode):
        return None
    target = quarantine_name(name)
    if lstat_at(dir_fd, target) is not None:
        target = f"{name}.{secrets.token_hex(4)}{quarantine_name('')}"
    rename_at(dir_fd, name, target)
    log.warning(
        "%s is a %s, not a block file: renamed to %s", shown, describe_mode(st.st_mode), target
    )
    return target


def write_new_file(
    dir_fd: int, name: str, payload: bytes, mtime_ns: int, *, fsync: bool, live: LiveTemps
) -> None:
    """Write ``name`` under ``dir_fd`` through a temp file and a rename.

    The file is fsynced (with ``fsync``) but not its directory: the caller does that
    once it has finished changing the directory.
    """
    for attempt in range(TEMP_NAME_TRIES):
        tmp = name + temp_suffix()
        live.add(tmp)
        try:
            try:
                fd = os.open(tmp, _CREATE_FLAGS, 0o644, dir_fd=dir_fd)
            except FileExistsError:
                if attempt + 1 == TEMP_NAME_TRIES:
                    raise
                continue  # another writer's temp name (a different process): draw again
            try:
                try:
                    _write_all(fd, payload)
                    os.utime(fd, ns=(mtime_ns, mtime_ns))
                    if fsync:
                        os.fsync(fd)
                finally:
                    os.close(fd)
                rename_at(dir_fd, tmp, name)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp, dir_fd=dir_fd)
                raise
            return
        finally:
            live.discard(tmp)


def place_copy(
    root: str,
    hash: Hash,
    block: DataBlock,
    mtime_ns: int,
    *,
    fsync: bool,
    live: LiveTemps,
    roots: DataRoots | None = None,
) -> Placed:
    """Durably store ``block`` in ``root``'s ``aa/bb`` unless an equal or better copy
    is there (then its mtime is refreshed); a plain copy there is superseded by a
    compressed one. The caller holds the block's lock and has verified ``block``.
    With ``roots``, ``aa/bb`` is reached from the root's kept descriptor.
    """
    aa, bb = subdir_names(hash)
    try:
        dir_fd = open_subdir(root, aa, bb, roots)
    except FileNotFoundError:
        dir_fd = make_subdir(root, aa, bb, fsync=fsync, roots=roots)
    try:
        shown = f"{root}/{aa}/{bb}"
        return place_in(dir_fd, shown, hash, block, mtime_ns, fsync=fsync, live=live)[0]
    finally:
        os.close(dir_fd)


def place_in(
    dir_fd: int,
    shown: str,
    hash: Hash,
    block: DataBlock,
    mtime_ns: int,
    *,
    fsync: bool,
    live: LiveTemps,
    seen: tuple[os.stat_result | None, ...] | None = None,
) -> tuple[Placed, tuple[int, int] | None]:
    """:func:`place_copy` into the open ``aa/bb`` directory ``dir_fd`` (left open).

    ``seen``: the ``lstat`` of the ``.zst`` and plain names, just taken by the caller
    (None: looked at here). Returns what was done, with the copies and bytes it added
    when it went exactly as those ``lstat`` said (None when something else changed
    meanwhile).
    """
    name = block_name(hash, block.header)
    if seen is None:
        seen = (
            lstat_at(dir_fd, block_name(hash, BlockHeader.COMPRESSED)),
            lstat_at(dir_fd, block_name(hash, BlockHeader.PLAIN)),
        )
    zst, plain = seen
    mine = zst if block.header is BlockHeader.COMPRESSED else plain
    if mine is not None and not stat.S_ISREG(mine.st_mode):
        set_aside(dir_fd, name, f"{shown}/{name}")
    for header, st in ((BlockHeader.COMPRESSED, zst), (BlockHeader.PLAIN, plain)):
        if st is None or not stat.S_ISREG(st.st_mode):
            continue
        if not supersedes(block.header, header):
            refresh_mtime(dir_fd, block_name(hash, header), mtime_ns)
            return Placed.KEPT, (0, 0)
    write_new_file(dir_fd, name, block.payload, mtime_ns, fsync=fsync, live=live)
    added: tuple[int, int] | None = (1, len(block.payload))
    replaced = False
    if block.header is BlockHeader.COMPRESSED and plain is not None and stat.S_ISREG(plain.st_mode):
        added = None  # rare here (a caller seeing a copy takes another path): look again
        with contextlib.suppress(FileNotFoundError):
            os.unlink(block_name(hash, BlockHeader.PLAIN), dir_fd=dir_fd)
            replaced = True
    if fsync:
        os.fsync(dir_fd)
    return (Placed.REPLACED if replaced else Placed.WRITTEN), added


__all__ = [
    "LiveTemps",
    "Placed",
    "place_copy",
    "place_in",
    "refresh_mtime",
    "set_aside",
    "supersedes",
    "write_new_file",
]
