"""Acting on names inside a data directory without ever following a link out of it.

The trust boundary: a data directory's root is the operator's choice and may itself be a
symbolic link or a mount point, so it is opened by path. Below it nothing is trusted:

- ``aa`` and ``aa/bb`` are opened one level at a time with ``O_NOFOLLOW|O_DIRECTORY``
  relative to the descriptor of their parent, so a symbolic link (or a file) in their
  place is refused, never followed;
- a block file is opened relative to its ``aa/bb`` descriptor with
  ``O_NOFOLLOW|O_NONBLOCK|O_NOCTTY`` (a FIFO or a device cannot block the open or become
  a terminal) and ``fstat``-ed: only a regular file is a copy (:class:`NotABlockFile`);
- renames, unlinks and ``utime`` act on names relative to the ``aa/bb`` descriptor, and
  neither a rename nor an unlink follows a link;
- a read never takes more than the caller's limit (:func:`read_bounded`).

Everything here blocks: callers run it in a worker thread.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager

from .paths import split_block_path

log = logging.getLogger("trioblock.storage")

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_NOCTTY | os.O_CLOEXEC
READ_CHUNK = 1 << 20


class NotABlockFile(OSError):
    """Something that is not a regular file (a FIFO, a link, a directory...) under a
    block's name: never read, never a copy."""

    def __init__(self, path: str, kind: str) -> None:
        super().__init__(errno.EINVAL, f"{path} is a {kind}, not a regular file")
        self.path = path
        self.kind = kind


class NotASubdir(OSError):
    """A symbolic link or a file where a data directory's ``aa`` or ``aa/bb`` should be."""

    def __init__(self, path: str) -> None:
        super().__init__(
            errno.ENOTDIR,
            f"{path} is not a directory (a link or another file): trioblock never "
            "follows links inside a data directory",
        )
        self.path = path


def describe_mode(mode: int) -> str:
    """What kind of file ``mode`` is, in words."""
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISLNK(mode):
        return "symbolic link"
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return "regular file" if stat.S_ISREG(mode) else "special file"


def open_root(root: str) -> int:
    """A descriptor of a data directory's root (followed: the root is trusted)."""
    return os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def open_child_dir(parent_fd: int, name: str, shown: str) -> int:
    """``name`` under ``parent_fd`` as a directory, refusing a link or a file."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise NotASubdir(shown) from None
        raise


def open_subdir(root: str, aa: str, bb: str) -> int:
    """A descriptor of ``root/aa/bb``; ``FileNotFoundError`` or :class:`NotASubdir`."""
    try:
        afd = os.open(f"{root}/{aa}", _DIR_FLAGS)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            if os.path.isdir(root):
                raise NotASubdir(f"{root}/{aa}") from None
            raise FileNotFoundError(errno.ENOENT, "no such data directory", root) from None
        raise
    try:
        return open_child_dir(afd, bb, f"{root}/{aa}/{bb}")
    finally:
        os.close(afd)


@contextmanager
def subdir(root: str, aa: str, bb: str) -> Iterator[int]:
    """:func:`open_subdir`, closed on exit."""
    fd = open_subdir(root, aa, bb)
    try:
        yield fd
    finally:
        os.close(fd)


def make_subdir(root: str, aa: str, bb: str, *, fsync: bool) -> int:
    """A descriptor of ``root/aa/bb``, created if missing (new entries made durable)."""
    rfd = open_root(root)
    try:
        created_a = _mkdir_at(rfd, aa)
        afd = open_child_dir(rfd, aa, f"{root}/{aa}")
        if created_a and fsync:
            os.fsync(rfd)
    finally:
        os.close(rfd)
    try:
        created_b = _mkdir_at(afd, bb)
        bfd = open_child_dir(afd, bb, f"{root}/{aa}/{bb}")
        if created_b and fsync:
            os.fsync(afd)
    finally:
        os.close(afd)
    return bfd


def _mkdir_at(parent_fd: int, name: str) -> bool:
    try:
        os.mkdir(name, dir_fd=parent_fd)
    except FileExistsError:
        return False
    return True


def open_file(dir_fd: int, name: str, shown: str) -> tuple[int, os.stat_result]:
    """Open ``name`` under ``dir_fd`` for reading: ``(fd, fstat)``.

    ``FileNotFoundError`` when absent; :class:`NotABlockFile` unless it is a regular
    file (a FIFO does not block the open, a link is never followed).
    """
    try:
        fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise NotABlockFile(shown, "symbolic link") from None
        if exc.errno in (errno.ENXIO, errno.ENODEV, errno.EISDIR):
            raise NotABlockFile(shown, "special file") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotABlockFile(shown, describe_mode(st.st_mode))
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def read_bounded(fd: int, size_hint: int, limit: int) -> bytes | None:
    """The whole file behind ``fd``, or None if it holds more than ``limit`` bytes.

    ``size_hint`` is its ``fstat`` size; the file may grow or shrink meanwhile, and
    never more than ``limit + 1`` bytes are read.
    """
    if size_hint > limit:
        return None
    data = os.read(fd, size_hint + 1)
    if len(data) <= size_hint:
        return data
    parts = [data]
    total = len(data)
    while total <= limit:
        chunk = os.read(fd, min(READ_CHUNK, limit + 1 - total))
        if not chunk:
            break
        parts.append(chunk)
        total += len(chunk)
    return None if total > limit else b"".join(parts)


def lstat_at(dir_fd: int, name: str) -> os.stat_result | None:
    """``lstat`` of ``name`` under ``dir_fd``, None when absent."""
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def rename_at(dir_fd: int, src: str, dst: str) -> None:
    os.rename(src, dst, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)


@contextmanager
def regular_at(path: str) -> Iterator[tuple[int, str] | None]:
    """``(dir_fd, name)`` for a block path whose name is a regular file there, else None.

    None when the path cannot name a copy, when its ``aa/bb`` is missing or not a
    directory, or when its name is absent or not a regular file (logged).
    """
    try:
        root, aa, bb, name = split_block_path(path)
        dir_fd = open_subdir(root, aa, bb)
    except (ValueError, FileNotFoundError, NotASubdir):
        yield None
        return
    try:
        st = lstat_at(dir_fd, name)
        if st is None:
            yield None
        elif not stat.S_ISREG(st.st_mode):
            log.warning("%s is a %s, not a block file: left alone", path, describe_mode(st.st_mode))
            yield None
        else:
            yield dir_fd, name
    finally:
        os.close(dir_fd)


def fsync_dir(path: str) -> None:
    """fsync a data directory's root (or any directory reached by a trusted path)."""
    fd = open_root(path)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


__all__ = [
    "READ_CHUNK",
    "NotABlockFile",
    "NotASubdir",
    "describe_mode",
    "fsync_dir",
    "lstat_at",
    "make_subdir",
    "open_child_dir",
    "open_file",
    "open_root",
    "open_subdir",
    "read_bounded",
    "regular_at",
    "rename_at",
    "subdir",
]
