"""The real disk: the ``Disk`` contract (``_core.disk``) over the operating system.

Handles are file descriptors. Names below a data directory's root are reached without
following links (``nofollow``), from the root's descriptor kept open while the disk
lives (``openat2``). Every method blocks: callers run them in a worker thread.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from functools import partial

from .._core.disk import DirEntry, Handle, SpaceUsage
from .nofollow import lstat_at, lstat_below, make_dir, open_dir, open_file, open_file_below
from .openat2 import DataRoots

_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC


class RealDisk:
    """The operating system's file systems, reached link-free below each root.

    ``openat2=False`` walks every path one level at a time instead of using
    ``openat2`` (as on systems without it).
    """

    def __init__(self, *, openat2: bool = True) -> None:
        #: each data directory's root, opened once (closed with this object)
        self.roots = DataRoots(openat2=openat2)
        # The hot calls, bound straight to their functions (no frame of their own).
        self.open_dir = partial(open_dir, self.roots)
        self.lstat = partial(lstat_below, self.roots)
        self.open_file = partial(open_file_below, self.roots)

    # (``os`` functions themselves: a call costs what the system call does)
    lstat_at = staticmethod(lstat_at)
    read = staticmethod(os.read)
    write = staticmethod(os.write)
    fsync = staticmethod(os.fsync)
    close = staticmethod(os.close)

    def make_dir(self, root: str, rel: str, *, fsync: bool) -> tuple[Handle, bool]:
        return make_dir(self.roots, root, rel, fsync=fsync)

    def list_dir(self, dir: Handle) -> Sequence[DirEntry]:
        with os.scandir(dir) as it:
            return list(it)

    def statvfs(self, root: str) -> SpaceUsage:
        usage = shutil.disk_usage(root)
        return SpaceUsage(usage.total, usage.free)

    def open_file_at(self, dir: Handle, name: str, shown: str) -> tuple[Handle, os.stat_result]:
        return open_file(dir, name, shown)

    def create_at(self, dir: Handle, name: str) -> Handle:
        return os.open(name, _CREATE_FLAGS, 0o644, dir_fd=dir)

    def set_mtime(self, file: Handle, mtime_ns: int) -> None:
        os.utime(file, ns=(mtime_ns, mtime_ns))

    def set_mtime_at(self, dir: Handle, name: str, mtime_ns: int) -> None:
        os.utime(name, ns=(mtime_ns, mtime_ns), dir_fd=dir, follow_symlinks=False)

    def rename_at(self, dir: Handle, src: str, dst: str) -> None:
        os.rename(src, dst, src_dir_fd=dir, dst_dir_fd=dir)

    def unlink_at(self, dir: Handle, name: str) -> None:
        os.unlink(name, dir_fd=dir)


__all__ = ["RealDisk"]
