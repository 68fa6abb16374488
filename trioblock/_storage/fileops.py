"""Short sequences of ``Disk`` calls shared by the storage modules.

- :func:`read_bounded` never reads more than the caller's limit (plus one byte to
  tell a larger file).
- :func:`write_all` writes every byte however short each write is.
- :func:`regular_at` opens the ``aa/bb`` of a block path and says whether its name is a
  regular file there: only a regular file is ever renamed or removed as a copy.

Everything here blocks: callers run it in a worker thread.
"""

from __future__ import annotations

import logging
import stat
from collections.abc import Iterator
from contextlib import contextmanager

from .._core.disk import Disk, Handle, NotASubdir
from .nofollow import describe_mode
from .paths import split_block_path

log = logging.getLogger("trioblock.storage")

#: Largest single read of a block file.
READ_CHUNK = 1 << 20


def read_bounded(disk: Disk, file: Handle, size_hint: int, limit: int) -> bytes | None:
    """The whole open ``file``, or None if it holds more than ``limit`` bytes.

    ``size_hint`` is its ``fstat`` size; the file may grow or shrink meanwhile, and
    never more than ``limit + 1`` bytes are read.
    """
    if size_hint > limit:
        return None
    data = disk.read(file, size_hint + 1)
    if len(data) <= size_hint:
        return data
    parts = [data]
    total = len(data)
    while total <= limit:
        chunk = disk.read(file, min(READ_CHUNK, limit + 1 - total))
        if not chunk:
            break
        parts.append(chunk)
        total += len(chunk)
    return None if total > limit else b"".join(parts)


def write_all(disk: Disk, file: Handle, data: bytes) -> None:
    """Write all of ``data`` to the open ``file``."""
    view = memoryview(data)
    while view:
        written = disk.write(file, view)
        view = view[written:]


@contextmanager
def regular_at(disk: Disk, path: str) -> Iterator[tuple[Handle, str] | None]:
    """``(dir, name)`` for a block path whose name is a regular file there, else None.

    None when the path cannot name a copy, when its ``aa/bb`` is missing or not a
    directory, or when its name is absent or not a regular file (logged).
    """
    try:
        root, aa, bb, name = split_block_path(path)
        dir = disk.open_dir(root, f"{aa}/{bb}")
    except (ValueError, FileNotFoundError, NotASubdir):
        yield None
        return
    try:
        st = disk.lstat_at(dir, name)
        if st is None:
            yield None
        elif not stat.S_ISREG(st.st_mode):
            log.warning("%s is a %s, not a block file: left alone", path, describe_mode(st.st_mode))
            yield None
        else:
            yield dir, name
    finally:
        disk.close(dir)


__all__ = ["READ_CHUNK", "read_bounded", "regular_at", "write_all"]
