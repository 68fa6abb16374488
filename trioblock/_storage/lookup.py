"""Finding and reading the first copy of a block, in lookup order.

Rules kept here:

- Lookup order: the candidate directories in the order given (the partition's primary
  first, then its secondaries), and in each, the encodings in the order given (``.zst``
  first when compression is on, plain first when it is off).
- Only a regular file is a copy: anything else under a block's name is logged and
  skipped, never opened for reading (``lstat``) or never read (``open_file`` refuses it
  after a non-blocking open). ``aa``/``bb`` directories are entered without following
  links.
- No read takes more than the encoding's size limit (``reading.size_limit``).

Blocking: callers run these in a worker thread.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterable, Iterator, Sequence

from .._core.block import BlockHeader, DataBlock
from .._core.hashing import Hash
from ..errors import CorruptBlockError
from .nofollow import (
    DataRoots,
    NotABlockFile,
    NotASubdir,
    describe_mode,
    lstat_at,
    lstat_below,
    open_file,
    open_file_below,
    open_subdir,
    read_bounded,
)
from .paths import BlockLocation, block_name, subdir_names
from .reading import size_limit

log = logging.getLogger("trioblock.storage")


def candidate_subdirs(roots: Iterable[str], hash: Hash) -> Iterator[tuple[str, int]]:
    """``(root/aa/bb, fd)`` of each candidate directory that exists, in order; each fd
    is closed when the next is asked for (or the generator is closed)."""
    aa, bb = subdir_names(hash)
    for root in roots:
        try:
            dir_fd = open_subdir(root, aa, bb)
        except (FileNotFoundError, NotASubdir):
            continue
        try:
            yield f"{root}/{aa}/{bb}", dir_fd
        finally:
            os.close(dir_fd)


def is_regular(mode: int, path: str) -> bool:
    """Whether ``mode`` is a regular file; logs what else sits under a block's name."""
    if stat.S_ISREG(mode):
        return True
    log.warning("%s is a %s, not a block file: skipped", path, describe_mode(mode))
    return False


def find_copy(
    roots: Iterable[str],
    hash: Hash,
    order: Sequence[BlockHeader],
    data_roots: DataRoots | None = None,
) -> BlockLocation | None:
    """The first copy of ``hash`` (by ``lstat``: size and mtime), or None.

    With ``data_roots``, each name is looked at from its root's kept descriptor in one
    call (see ``nofollow``) instead of opening ``aa`` and ``aa/bb`` first.
    """
    if data_roots is not None:
        aa, bb = subdir_names(hash)
        for root in roots:
            for header in order:
                name = block_name(hash, header)
                st = lstat_below(data_roots, root, aa, bb, name)
                if st is not None:
                    path = f"{root}/{aa}/{bb}/{name}"
                    if is_regular(st.st_mode, path):
                        return BlockLocation(hash, path, header, st.st_size, st.st_mtime_ns)
        return None
    for where, dir_fd in candidate_subdirs(roots, hash):
        for header in order:
            path = f"{where}/{block_name(hash, header)}"
            st = lstat_at(dir_fd, block_name(hash, header))
            if st is not None and is_regular(st.st_mode, path):
                return BlockLocation(hash, path, header, st.st_size, st.st_mtime_ns)
    return None


def read_first_copy(
    roots: Iterable[str],
    hash: Hash,
    order: Sequence[BlockHeader],
    max_block_size: int,
    data_roots: DataRoots | None = None,
) -> tuple[DataBlock, BlockLocation] | None:
    """The encoded bytes of the first copy, unverified, or None when there is none.

    A copy over its size limit raises ``CorruptBlockError`` with a ``location``
    attribute, unread. With ``data_roots``, each candidate is opened from its root's
    kept descriptor in one call (no lookup first, no ``aa/bb`` opened).
    """
    if data_roots is not None:
        aa, bb = subdir_names(hash)
        for root in roots:
            for header in order:
                name = block_name(hash, header)
                try:
                    fd, st = open_file_below(data_roots, root, aa, bb, name)
                except FileNotFoundError:
                    continue
                except NotABlockFile as exc:
                    log.warning("%s: skipped", exc.strerror)
                    continue
                return _read_open(fd, st, hash, f"{root}/{aa}/{bb}/{name}", header, max_block_size)
        return None
    for where, dir_fd in candidate_subdirs(roots, hash):
        for header in order:
            name = block_name(hash, header)
            path = f"{where}/{name}"
            try:
                fd, st = open_file(dir_fd, name, path)
            except FileNotFoundError:
                continue
            except NotABlockFile as exc:
                log.warning("%s: skipped", exc.strerror)
                continue
            return _read_open(fd, st, hash, path, header, max_block_size)
    return None


def _read_open(
    fd: int,
    st: os.stat_result,
    hash: Hash,
    path: str,
    header: BlockHeader,
    max_block_size: int,
) -> tuple[DataBlock, BlockLocation]:
    """Read the open copy ``fd`` (closed here) up to its size limit."""
    try:
        payload = read_bounded(fd, st.st_size, size_limit(header, max_block_size))
    finally:
        os.close(fd)
    loc = BlockLocation(hash, path, header, st.st_size, st.st_mtime_ns)
    if payload is None:
        too_big = CorruptBlockError(
            hash, f"block {hash.hex()} is corrupt: {path} is over the size limit"
        )
        too_big.location = loc  # type: ignore[attr-defined]
        raise too_big
    return DataBlock(header, payload), loc


__all__ = ["candidate_subdirs", "find_copy", "is_regular", "read_first_copy"]
