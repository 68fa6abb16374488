"""Finding and reading the first copy of a block, in lookup order.

Rules kept here:

- Lookup order: the candidate directories in the order given (the partition's primary
  first, then its secondaries), and in each, the encodings in the order given (``.zst``
  first when compression is on, plain first when it is off).
- Only a regular file is a copy: anything else under a block's name is logged and
  skipped, never opened for reading (``lstat``) or never read (``Disk.open_file``
  refuses it after a non-blocking open). Nothing is reached through a link.
- No read takes more than the encoding's size limit (``reading.size_limit``).

Blocking: callers run these in a worker thread.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterable, Sequence

from .._core.block import BlockHeader, DataBlock
from .._core.disk import Disk, Handle, NotABlockFile
from .._core.hashing import Hash
from ..errors import CorruptBlockError
from .fileops import read_bounded
from .nofollow import describe_mode
from .paths import BlockLocation, block_name, subdir_names
from .reading import size_limit

log = logging.getLogger("trioblock.storage")


def is_regular(mode: int, path: str) -> bool:
    """Whether ``mode`` is a regular file; logs what else sits under a block's name."""
    if stat.S_ISREG(mode):
        return True
    log.warning("%s is a %s, not a block file: skipped", path, describe_mode(mode))
    return False


def find_copy(
    disk: Disk, roots: Iterable[str], hash: Hash, order: Sequence[BlockHeader]
) -> BlockLocation | None:
    """The first copy of ``hash`` (by ``lstat``: size and mtime), or None; each name is
    looked at below its root in one call (no ``aa/bb`` opened first)."""
    aa, bb = subdir_names(hash)
    for root in roots:
        for header in order:
            name = block_name(hash, header)
            st = disk.lstat(root, f"{aa}/{bb}/{name}")
            if st is not None:
                path = f"{root}/{aa}/{bb}/{name}"
                if is_regular(st.st_mode, path):
                    return BlockLocation(hash, path, header, st.st_size, st.st_mtime_ns)
    return None


def read_first_copy(
    disk: Disk,
    roots: Iterable[str],
    hash: Hash,
    order: Sequence[BlockHeader],
    max_block_size: int,
) -> tuple[DataBlock, BlockLocation] | None:
    """The encoded bytes of the first copy, unverified, or None when there is none.

    A copy over its size limit raises ``CorruptBlockError`` with its ``location``,
    unread. Each candidate is opened below its root in one call (no lookup first).
    """
    aa, bb = subdir_names(hash)
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
            path = f"{root}/{aa}/{bb}/{name}"
            return _read_open(disk, fd, st, hash, path, header, max_block_size)
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
