"""Reading and verifying one block copy, bounded and without following links.

Rules kept here:

- A copy is opened through ``nofollow`` (regular files only) and never read past the
  size limit of its encoding (``max_encoded_size(max_block_size)`` for ``.zst``,
  ``max_block_size`` for plain): a larger file is corrupt without being read.
- Files up to ``WHOLE_FILE_VERIFY`` bytes are read and decoded in one pass; larger ones
  stream through a ``BlockDecoder`` in bounded memory.
"""

from __future__ import annotations

import errno
import os

import trio

from .._core.block import BlockDecoder, BlockHeader, DataBlock, decode_block, max_encoded_size
from .._core.hashing import Hash
from ..errors import CorruptBlockError
from .nofollow import (
    READ_CHUNK,
    DataRoots,
    NotASubdir,
    open_file,
    open_file_below,
    read_bounded,
    subdir,
)
from .offload import run_blocking
from .paths import BlockLocation, split_block_path

#: Largest file verified in one read (bigger ones stream in READ_CHUNK pieces).
WHOLE_FILE_VERIFY = 8 << 20


def size_limit(header: BlockHeader, max_block_size: int) -> int:
    """The most bytes read from one copy in ``header``'s encoding."""
    if header is BlockHeader.PLAIN:
        return max_block_size
    return max_encoded_size(max_block_size)


def open_location(
    loc: BlockLocation, data_roots: DataRoots | None = None
) -> tuple[int, os.stat_result]:
    """Open the copy at ``loc`` without following links: ``(fd, fstat)``.

    ``FileNotFoundError`` when it is gone (or ``loc`` cannot name a copy),
    ``NotABlockFile`` when something else than a regular file is there.
    """
    try:
        root, aa, bb, name = split_block_path(loc.path_str)
    except ValueError:
        raise FileNotFoundError(errno.ENOENT, "not a block path", loc.path_str) from None
    if data_roots is not None:
        return open_file_below(data_roots, root, aa, bb, name)
    try:
        with subdir(root, aa, bb) as dir_fd:
            return open_file(dir_fd, name, loc.path_str)
    except NotASubdir:
        raise FileNotFoundError(errno.ENOENT, "not in a data directory", loc.path_str) from None


def verify_open_copy(fd: int, size: int, loc: BlockLocation, max_block_size: int) -> bool:
    """Whether the open copy ``fd`` (``size`` by its fstat) is a valid copy of ``loc``."""
    limit = size_limit(loc.header, max_block_size)
    if size > limit:
        return False
    try:
        if size <= WHOLE_FILE_VERIFY:
            payload = read_bounded(fd, size, limit)
            if payload is None:
                return False
            decode_block(loc.hash, DataBlock(loc.header, payload), max_size=max_block_size)
            return True
        decoder = BlockDecoder(loc.hash, loc.header, max_size=max_block_size)
        left = limit
        while chunk := os.read(fd, min(READ_CHUNK, left + 1)):
            left -= len(chunk)
            if left < 0:
                return False
            decoder.feed(chunk)
        decoder.finish()
    except CorruptBlockError:
        return False
    return True


def verify_location(
    loc: BlockLocation, max_block_size: int, data_roots: DataRoots | None = None
) -> bool:
    """Whether the file at ``loc`` is a valid copy (False when it is gone)."""
    try:
        fd, st = open_location(loc, data_roots)
    except FileNotFoundError:
        return False
    try:
        return verify_open_copy(fd, st.st_size, loc, max_block_size)
    finally:
        os.close(fd)


class FileChunks:
    """Async iterator over an open copy's chunks, bounded (a class, not an async
    generator, so that nothing is left to the garbage collector when the consumer stops
    early). More than ``limit`` bytes is a ``CorruptBlockError``."""

    def __init__(self, fd: int, limiter: trio.CapacityLimiter, hash: Hash, limit: int) -> None:
        self._fd = fd
        self._limiter = limiter
        self._hash = hash
        self._left = limit

    def __aiter__(self) -> FileChunks:
        return self

    async def __anext__(self) -> bytes:
        size = min(READ_CHUNK, self._left + 1)
        chunk = await run_blocking(os.read, self._fd, size, limiter=self._limiter)
        if not chunk:
            raise StopAsyncIteration
        self._left -= len(chunk)
        if self._left < 0:
            raise CorruptBlockError(
                self._hash, f"block {self._hash.hex()} is corrupt: larger than its size limit"
            )
        return chunk


__all__ = [
    "WHOLE_FILE_VERIFY",
    "FileChunks",
    "open_location",
    "size_limit",
    "verify_location",
    "verify_open_copy",
]
