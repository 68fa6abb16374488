"""Reading and verifying one block copy, bounded and without following links.

Rules kept here:

- A copy is opened through the node's ``Disk`` (regular files only, no link followed)
  and never read past the size limit of its encoding (``max_encoded_size(max_block_size)``
  for ``.zst``, ``max_block_size`` for plain): a larger file is corrupt without being
  read.
- Files up to ``WHOLE_FILE_VERIFY`` bytes are read and decoded in one pass; larger ones
  stream through a ``BlockDecoder`` in bounded memory.
"""

from __future__ import annotations

import errno
import os

import trio

from .._core.block import BlockDecoder, BlockHeader, DataBlock, decode_block, max_encoded_size
from .._core.disk import Disk, Handle
from .._core.hashing import Hash
from ..errors import CorruptBlockError
from .fileops import READ_CHUNK, read_bounded
from .paths import BlockLocation, split_block_path
from .threads import run_blocking

#: Largest file verified in one read (bigger ones stream in READ_CHUNK pieces).
WHOLE_FILE_VERIFY = 8 << 20


def size_limit(header: BlockHeader, max_block_size: int) -> int:
    """The most bytes read from one copy in ``header``'s encoding."""
    if header is BlockHeader.PLAIN:
        return max_block_size
    return max_encoded_size(max_block_size)


def open_location(disk: Disk, loc: BlockLocation) -> tuple[Handle, os.stat_result]:
    """Open the copy at ``loc`` without following links: ``(file, fstat)``.

    ``FileNotFoundError`` when it is gone (or ``loc`` cannot name a copy),
    ``NotABlockFile`` when something else than a regular file is there.
    """
    try:
        root, aa, bb, name = split_block_path(loc.path_str)
    except ValueError:
        raise FileNotFoundError(errno.ENOENT, "not a block path", loc.path_str) from None
    return disk.open_file(root, f"{aa}/{bb}/{name}")


def verify_open_copy(
    disk: Disk, file: Handle, size: int, loc: BlockLocation, max_block_size: int
) -> int:
    """Verify the open copy ``file`` (``size`` by its fstat) of ``loc``: the bytes read,
    or ``CorruptBlockError`` (``OSError`` when it cannot be read). The one verify loop,
    for the node and for ``verify-dir``."""
    limit = size_limit(loc.header, max_block_size)
    if size > limit:
        raise CorruptBlockError(loc.hash, f"{size} bytes, over the size limit")
    if size <= WHOLE_FILE_VERIFY:
        payload = read_bounded(disk, file, size, limit)
        if payload is None:
            raise CorruptBlockError(loc.hash, "over the size limit")
        decode_block(loc.hash, DataBlock(loc.header, payload), max_size=max_block_size)
        return len(payload)
    decoder = BlockDecoder(loc.hash, loc.header, max_size=max_block_size)
    done = 0
    while chunk := disk.read(file, min(READ_CHUNK, limit + 1 - done)):
        done += len(chunk)
        if done > limit:
            raise CorruptBlockError(loc.hash, "over the size limit")
        decoder.feed(chunk)
    decoder.finish()
    return done


def verify_location(disk: Disk, loc: BlockLocation, max_block_size: int) -> bool:
    """Whether the file at ``loc`` is a valid copy (False when it is gone)."""
    try:
        file, st = open_location(disk, loc)
    except FileNotFoundError:
        return False
    try:
        verify_open_copy(disk, file, st.st_size, loc, max_block_size)
    except CorruptBlockError:
        return False
    finally:
        disk.close(file)
    return True


class FileChunks:
    """Async iterator over an open copy's chunks, bounded (a class, not an async
    generator, so that nothing is left to the garbage collector when the consumer stops
    early). More than ``limit`` bytes is a ``CorruptBlockError``."""

    def __init__(
        self, disk: Disk, file: Handle, limiter: trio.CapacityLimiter, hash: Hash, limit: int
    ) -> None:
        self._disk = disk
        self._file = file
        self._limiter = limiter
        self._hash = hash
        self._left = limit

    def __aiter__(self) -> FileChunks:
        return self

    async def __anext__(self) -> bytes:
        size = min(READ_CHUNK, self._left + 1)
        chunk = await run_blocking(self._disk.read, self._file, size, limiter=self._limiter)
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
