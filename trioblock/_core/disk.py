"""The ``Disk`` contract: every file operation of the block store goes through one.

The block store (``_storage``) never calls ``os`` on its data directories itself: it
asks the node's :class:`Disk` (``Config.disk``; None means the real one,
``_storage.realdisk.RealDisk``). A simulated disk (power loss, EIO, ENOSPC) implements
the same methods.

What every implementation promises:

- A *root* is a data directory's path, trusted as given (it may be a link or a mount
  point). A *rel* path below it (``""`` for the root itself, ``"aa"``, ``"aa/bb"``,
  ``"aa/bb/<name>"``) is reached without following any link: a link, a file where a
  directory should be, or a FIFO/device/directory where a file should be, is refused
  (:class:`NotASubdir`, :class:`NotABlockFile`), never followed nor opened.
- A *handle* is an opaque number the disk hands out for an open directory or file (a
  file descriptor for the real disk); whoever got it closes it with :meth:`Disk.close`.
  ``*_at`` methods act on a name directly inside an open directory handle.
- Failures are ``OSError`` with the errno a real file system would give
  (``FileNotFoundError`` when absent, ``EIO``, ``ENOSPC``, ``EROFS``...).
- Durability is explicit: a write, create, rename or unlink is durable once the file
  (:meth:`Disk.fsync` of its handle) and its directory (:meth:`Disk.fsync` of the
  directory's handle) have been synced; nothing else promises it.
- Every method may block: callers run them in a worker thread.
- The hot calls (``open_dir``, ``lstat``, ``lstat_at``, ``open_file``, ``read``,
  ``write``, ``fsync``, ``close``) take their arguments by position only, so that an
  implementation may bind them straight to functions (the real disk's calls then cost
  no more than the functions they are).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from typing import NamedTuple, Protocol, TypeAlias

#: An open directory or file of a :class:`Disk` (a file descriptor for the real disk).
Handle: TypeAlias = int


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


class SpaceUsage(NamedTuple):
    """Size and free space of the file system holding a data directory, in bytes."""

    total: int
    free: int


class DirEntry(Protocol):
    """One entry of :meth:`Disk.list_dir` (``os.DirEntry`` is one): its kind is asked
    of the entry, never through a link (``follow_symlinks=False``)."""

    @property
    def name(self) -> str: ...

    def is_file(self, *, follow_symlinks: bool = ...) -> bool: ...

    def is_dir(self, *, follow_symlinks: bool = ...) -> bool: ...

    def stat(self, *, follow_symlinks: bool = ...) -> os.stat_result: ...


class Disk(Protocol):
    """The file operations of a node's block store (see the module's promises)."""

    # -- directories ------------------------------------------------------------------

    def open_dir(self, root: str, rel: str = "", /) -> Handle:
        """``root/rel`` as a directory handle (``rel`` ``""``: the root itself).

        ``FileNotFoundError`` when absent; :class:`NotASubdir` when a link or a file
        stands on the way below the root."""
        ...

    def make_dir(self, root: str, rel: str, *, fsync: bool) -> tuple[Handle, bool]:
        """``root/rel`` (``"aa"`` or ``"aa/bb"``) as a directory handle, made with its
        missing parent if needed (each new entry fsynced into its parent with
        ``fsync``), and whether this call made the last level. ``rel`` ``""`` makes
        the root and its parents like ``mkdir -p`` (the operator's, never fsynced)."""
        ...

    def list_dir(self, dir: Handle) -> Sequence[DirEntry]:
        """The entries of an open directory, in no particular order; each answers
        ``is_file``/``is_dir``/``stat`` while ``dir`` stays open."""
        ...

    # -- looking -----------------------------------------------------------------------

    def lstat(self, root: str, rel: str, /) -> os.stat_result | None:
        """``lstat`` of ``root/rel`` (not following a link at its name either); None
        when absent or when a parent below the root is missing or not a directory."""
        ...

    def lstat_at(self, dir: Handle, name: str, /) -> os.stat_result | None:
        """``lstat`` of ``name`` in ``dir``; None when absent."""
        ...

    def statvfs(self, root: str) -> SpaceUsage:
        """Size and free space of the file system holding ``root``."""
        ...

    # -- files ---------------------------------------------------------------------------

    def open_file(self, root: str, rel: str, /) -> tuple[Handle, os.stat_result]:
        """``root/rel`` opened for reading, with its ``fstat``: ``FileNotFoundError``
        when absent (or a parent is missing, not a directory or a link);
        :class:`NotABlockFile` unless it is a regular file (a FIFO never blocks)."""
        ...

    def open_file_at(self, dir: Handle, name: str, shown: str) -> tuple[Handle, os.stat_result]:
        """:meth:`open_file` of ``name`` in ``dir`` (``shown`` names it in errors)."""
        ...

    def create_at(self, dir: Handle, name: str) -> Handle:
        """A new empty file ``name`` in ``dir``, opened for writing
        (``FileExistsError`` if the name is taken)."""
        ...

    def read(self, file: Handle, size: int, /) -> bytes:
        """Up to ``size`` bytes from the file's position (``b""`` at its end)."""
        ...

    def write(self, file: Handle, data: bytes | memoryview, /) -> int:
        """Write at the file's position; the number of bytes written (maybe fewer)."""
        ...

    def set_mtime(self, file: Handle, mtime_ns: int) -> None:
        """Set an open file's access and modification times."""
        ...

    def set_mtime_at(self, dir: Handle, name: str, mtime_ns: int) -> None:
        """Set the times of ``name`` in ``dir`` (never through a link)."""
        ...

    def fsync(self, handle: Handle, /) -> None:
        """Make an open file's data, or an open directory's entries, durable."""
        ...

    def rename_at(self, dir: Handle, src: str, dst: str) -> None:
        """Rename ``src`` to ``dst`` within ``dir`` (replacing ``dst``; no link
        followed)."""
        ...

    def unlink_at(self, dir: Handle, name: str) -> None:
        """Remove the file ``name`` from ``dir`` (a link itself, never its target)."""
        ...

    def close(self, handle: Handle, /) -> None:
        """Close a handle this disk handed out."""
        ...


#: The methods of :class:`Disk` (what ``Config.validate`` checks a ``disk`` has).
DISK_METHODS: tuple[str, ...] = tuple(
    name for name in vars(Disk) if not name.startswith("_") and callable(getattr(Disk, name))
)

__all__ = [
    "DISK_METHODS",
    "DirEntry",
    "Disk",
    "Handle",
    "NotABlockFile",
    "NotASubdir",
    "SpaceUsage",
]
