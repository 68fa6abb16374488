"""Finding and reading the first copy of a block, in lookup order.

Rules kept here:

- Lookup order: the candidate directories in the order given (the partition's primary
  first, then its secondaries), and in each, the encodings in the order given (``.zst``
  first when compression is on, plain first when it is off).
- Only a regular file is a copy: anything else under a block's name is logged and
  skipped, never opened for reading (``lstat``) or never read (``Disk.open_file``
  refuses it after a non-blocking open). Nothing is reached through a link.
- No read takes more than the encoding's size limit (``reading.size_limit``).
- A directory whose lookup or read fails (``EIO``, ``EACCES``...) is a failed source:
  the error is reported (``on_error``: the directory's health counts it) and the next
  directory is tried; when no copy was found, the first such error is raised as a
  ``DiskError`` naming its directory, so that the caller goes to peers (a get) or
  retries later (a resync) instead of taking the block for absent.

Blocking: callers run these in a worker thread.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable, Iterable, Sequence

from .._core.block import BlockHeader, DataBlock
from .._core.disk import Disk, Handle, NotABlockFile
from .._core.hashing import Hash
from ..errors import CorruptBlockError, DiskError
from .fileops import read_bounded
from .nofollow import describe_mode
from .paths import BlockLocation, block_name, subdir_names
from .reading import size_limit

log = logging.getLogger("trioblock.storage")

#: Told of a directory whose lookup or read failed: ``(root, error)``.
OnError = Callable[[str, OSError], None]


class _Failures:
    """The errors of one lookup: reported as they happen, the first one kept."""

    __slots__ = ("first", "on_error")

    def __init__(self, on_error: OnError | None) -> None:
        self.on_error = on_error
        self.first: tuple[str, OSError] | None = None

    def add(self, root: str, exc: OSError) -> None:
        log.debug("cannot look for a block in %s: %s", root, exc)
        if self.on_error is not None:
            self.on_error(root, exc)
        if self.first is None:
            self.first = (root, exc)

    def raise_first(self) -> None:
        if self.first is not None:
            root, exc = self.first
            raise DiskError(
                root, exc.errno, f"a copy in {root} cannot be read: {exc.strerror or exc}"
            ) from exc


def is_regular(mode: int, path: str) -> bool:
    """Whether ``mode`` is a regular file; logs what else sits under a block's name."""
    if stat.S_ISREG(mode):
        return True
    log.warning("%s is a %s, not a block file: skipped", path, describe_mode(mode))
    return False


def find_copy(
    disk: Disk,
    roots: Iterable[str],
    hash: Hash,
    order: Sequence[BlockHeader],
    on_error: OnError | None = None,
) -> BlockLocation | None:
    """The first copy of ``hash`` (by ``lstat``: size and mtime), or None; each name is
    looked at below its root in one call (no ``aa/bb`` opened first)."""
    aa, bb = subdir_names(hash)
    failures = _Failures(on_error)
    for root in roots:
        for header in order:
            name = block_name(hash, header)
            try:
                st = disk.lstat(root, f"{aa}/{bb}/{name}")
            except OSError as exc:
                failures.add(root, exc)
                break
            if st is not None:
                path = f"{root}/{aa}/{bb}/{name}"
                if is_regular(st.st_mode, path):
                    return BlockLocation(hash, path, header, st.st_size, st.st_mtime_ns)
    failures.raise_first()
    return None


def read_first_copy(
    disk: Disk,
    roots: Iterable[str],
    hash: Hash,
    order: Sequence[BlockHeader],
    max_block_size: int,
    on_error: OnError | None = None,
) -> tuple[DataBlock, BlockLocation] | None:
    """The encoded bytes of the first copy, unverified, or None when there is none.

    A copy over its size limit raises ``CorruptBlockError`` with its ``location``,
    unread. Each candidate is opened below its root in one call (no lookup first).
    """
    aa, bb = subdir_names(hash)
    failures = _Failures(on_error)
    for root in roots:
        for header in order:
            name = block_name(hash, header)
            try:
                fd, st = disk.open_file(root, f"{aa}/{bb}/{name}")
            except FileNotFoundError:
                continue
            except NotABlockFile as exc:
                log.warning("%s: skipped", exc.strerror)
                continue
            except OSError as exc:
                failures.add(root, exc)
                continue
            path = f"{root}/{aa}/{bb}/{name}"
            try:
                return _read_open(disk, fd, st, hash, path, header, max_block_size)
            except OSError as exc:
                failures.add(root, exc)
    failures.raise_first()
    return None


def _read_open(
    disk: Disk,
    fd: Handle,
    st: os.stat_result,
    hash: Hash,
    path: str,
    header: BlockHeader,
    max_block_size: int,
) -> tuple[DataBlock, BlockLocation]:
    """Read the open copy ``fd`` (closed here) up to its size limit."""
    try:
        payload = read_bounded(disk, fd, st.st_size, size_limit(header, max_block_size))
    finally:
        disk.close(fd)
    loc = BlockLocation(hash, path, header, st.st_size, st.st_mtime_ns)
    if payload is None:
        raise CorruptBlockError(
            hash, f"block {hash.hex()} is corrupt: {path} is over the size limit", location=loc
        )
    return DataBlock(header, payload), loc


__all__ = ["find_copy", "is_regular", "read_first_copy"]
