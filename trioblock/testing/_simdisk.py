"""``SimulatedDisk``: an in-memory ``Disk`` (``trioblock._core.disk``) that loses power,
fails, fills up, slows down and rots, deterministically from a seed.

Rules kept here (the fault semantics are in :class:`SimulatedDisk`'s docstring and
``_simfaults``, the durability model in ``_simfs``, roots and test helpers in
``_simtree``):

- It keeps the ``Disk`` contract as the real disk does: a root is a data directory's
  path (made by ``make_dir(root, "")``), a rel path below it is reached without
  following anything (a link, a file where a directory should be, a FIFO or a directory
  where a file should be is refused with the errors of the contract), errors are
  ``OSError`` with a real errno, handles are small integers (``EBADF`` once closed or
  after a power loss).
- Each call checks the faults armed for its operation before it changes anything, and
  records each change it makes as pending until an fsync makes it durable.
- One ``threading.RLock`` guards everything (the node calls a disk from worker threads);
  only the latency sleep happens outside it.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import Sequence

from .._core.disk import DirEntry, Handle, NotABlockFile, NotASubdir, SpaceUsage
from ._simfaults import SimFaults, os_error
from ._simfs import Dir, File, Inode, Link, Rename, Touch, Unlink, Write
from ._simtree import OpenHandle, kind_of


class _Entry:
    """One entry of :meth:`SimulatedDisk.list_dir` (as ``os.DirEntry``: the kind from
    the listing, ``stat`` looked up when asked, never through a link)."""

    __slots__ = ("_dir", "_disk", "_inode", "name")

    def __init__(self, disk: SimulatedDisk, dir: Dir, name: str, inode: Inode) -> None:
        self._disk = disk
        self._dir = dir
        self._inode = inode
        self.name = name

    def is_file(self, *, follow_symlinks: bool = True) -> bool:
        return stat.S_ISREG(self._inode.mode)

    def is_dir(self, *, follow_symlinks: bool = True) -> bool:
        return stat.S_ISDIR(self._inode.mode)

    def stat(self, *, follow_symlinks: bool = True) -> os.stat_result:
        with self._disk._lock:
            inode = self._dir.entries.get(self.name)
            if inode is None:
                raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), self.name)
            return inode.stat()


class SimulatedDisk(SimFaults):
    """An in-memory disk for a node (``Config(disk=SimulatedDisk())``) whose faults a
    test controls, every random choice drawn from ``random.Random(seed)``.

    **Durability** is tracked exactly: a file's data (and an mtime set on it) is durable
    up to the last successful :meth:`fsync` of the file; a directory entry change
    (create, mkdir, rename, unlink) once the directory is fsynced (``make_dir(...,
    fsync=True)`` fsyncs the parent of each directory it makes, as the real disk does).
    Roots themselves (and directories made by ``make_dir(root, "")``) are durable at
    once: they are the operator's, outside the model.

    **Faults** (all deterministic from the seed and the sequence of calls):

    - :meth:`power_loss`: every change not durable is independently kept, dropped, or
      (a write) torn at a 512-byte boundary of the file; open handles become invalid
      (``EBADF``): the program using the disk is expected to be gone (restart it).
    - :meth:`fail`: the next matching calls of an operation raise ``OSError(errno)``
      with nothing done, except a failed fsync, which forgets the changes it should have
      made durable (fsyncgate: the data stays readable until a power loss, and the next
      fsync succeeds with nothing to do).
    - :meth:`set_capacity`: ``ENOSPC`` beyond a number of bytes of file data (a write
      that does not fit writes what fits first); :meth:`statvfs` reports it.
    - :meth:`set_latency`: real-time sleeps before calls (see there).
    - :meth:`rot`: bytes of a stored file flipped, silently.

    It implements every method of the ``Disk`` contract (``open_dir``, ``make_dir``,
    ``list_dir``, ``lstat``, ``lstat_at``, ``statvfs``, ``open_file``, ``open_file_at``,
    ``create_at``, ``read``, ``write``, ``set_mtime``, ``set_mtime_at``, ``fsync``,
    ``rename_at``, ``unlink_at``, ``close``), and helpers for tests to look and plant
    (:meth:`files`, :meth:`read_file`, :meth:`durable_file`, :meth:`pending`,
    :meth:`exists`, :meth:`roots`, :meth:`write_file`, :meth:`symlink`,
    :meth:`mkfifo`, :meth:`delete`). Attributes: ``seed``, ``injected`` (each fault of
    :meth:`fail` that fired: ``(op, rel path, errno)``) and ``power_losses`` (a count).

    A disk may hold several roots (a node's several data directories, or the roots of
    several nodes: they then share its capacity, its faults and its power losses; two
    nodes must never share a root). Only file data counts against the capacity; names
    and directories are free, and a removed file frees its space at once even if a
    handle is still open on it.
    """

    # == the Disk contract ===========================================================

    def open_dir(self, root: str, rel: str = "", /) -> Handle:
        self._delay("open")
        with self._lock:
            self._fault("open", root, rel)
            return self._new_handle(self._dir_below(root, rel), root, rel)

    def make_dir(self, root: str, rel: str, *, fsync: bool) -> tuple[Handle, bool]:
        self._delay("open")
        with self._lock:
            self._fault("open", root, rel)
            if not rel:
                made = self._make_root(root)
                return self._new_handle(self._root_dir(root), root, ""), made
            head, _, name = rel.rpartition("/")
            try:
                parent = self._dir_below(root, head)
            except FileNotFoundError:
                self._close_now(self.make_dir(root, head, fsync=fsync)[0])
                parent = self._dir_below(root, head)
            shown = f"{root}/{rel}"
            created = name not in parent.entries
            if created:
                new = Dir(self._ino(), time.time_ns())
                parent.entries[name] = new
                self._change(parent, Link(self._next(), parent, name, new, f"mkdir {shown}"))
            found = parent.entries[name]
            if not isinstance(found, Dir):
                raise NotASubdir(shown)
            if created and fsync:
                self._fsync_inode(parent, root, head)
            return self._new_handle(found, root, rel), created

    def list_dir(self, dir: Handle) -> Sequence[DirEntry]:
        self._delay("list")
        with self._lock:
            h = self._handle(dir)
            if not isinstance(h.inode, Dir):
                raise os_error(errno.ENOTDIR, h.shown)
            self._fault("list", h.root, h.rel)
            d = h.inode
            return [_Entry(self, d, name, inode) for name, inode in d.entries.items()]

    def lstat(self, root: str, rel: str, /) -> os.stat_result | None:
        self._delay("stat")
        with self._lock:
            self._fault("stat", root, rel)
            head, _, name = rel.rpartition("/")
            try:
                parent = self._dir_below(root, head)
            except NotASubdir:
                return None
            except FileNotFoundError:
                self._root_dir(root)  # a missing root is an error, as on the real disk
                return None
            found = parent.entries.get(name)
            return None if found is None else found.stat()

    def lstat_at(self, dir: Handle, name: str, /) -> os.stat_result | None:
        self._delay("stat")
        with self._lock:
            h = self._dir_handle(dir)
            self._fault("stat", h.root, h.child(name))
            found = h.inode.entries.get(name)  # type: ignore[attr-defined]
            return None if found is None else found.stat()

    def statvfs(self, root: str) -> SpaceUsage:
        self._delay("stat")
        with self._lock:
            self._fault("stat", root, "")
            self._root_dir(root)
            total, used = self._space(self._norm(root))
            return SpaceUsage(total, max(0, total - used))

    def open_file(self, root: str, rel: str, /) -> tuple[Handle, os.stat_result]:
        self._delay("open")
        with self._lock:
            self._fault("open", root, rel)
            shown = f"{root}/{rel}"
            head, _, name = rel.rpartition("/")
            try:
                parent = self._dir_below(root, head)
            except NotASubdir:
                raise FileNotFoundError(errno.ENOENT, "not in a data directory", shown) from None
            return self._open_in(parent, root, rel, name, shown)

    def open_file_at(self, dir: Handle, name: str, shown: str) -> tuple[Handle, os.stat_result]:
        self._delay("open")
        with self._lock:
            h = self._dir_handle(dir)
            self._fault("open", h.root, h.child(name))
            return self._open_in(h.inode, h.root, h.child(name), name, shown)  # type: ignore[arg-type]

    def create_at(self, dir: Handle, name: str) -> Handle:
        self._delay("open")
        with self._lock:
            h = self._dir_handle(dir)
            rel = h.child(name)
            self._fault("open", h.root, rel)
            d: Dir = h.inode  # type: ignore[assignment]
            if name in d.entries:
                raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), f"{h.shown}/{name}")
            file = File(self._ino(), time.time_ns(), durable=False)
            d.entries[name] = file
            self._change(d, Link(self._next(), d, name, file, f"create {h.root}/{rel}"))
            return self._new_handle(file, h.root, rel, writable=True)

    def read(self, file: Handle, size: int, /) -> bytes:
        self._delay("read")
        with self._lock:
            h = self._handle(file)
            if isinstance(h.inode, Dir):
                raise os_error(errno.EISDIR, h.shown)
            if h.writable or not isinstance(h.inode, File):
                raise os_error(errno.EBADF, h.shown)
            self._fault("read", h.root, h.rel)
            data = bytes(h.inode.data[h.pos : h.pos + size])
            h.pos += len(data)
            return data

    def write(self, file: Handle, data: bytes | memoryview, /) -> int:
        self._delay("write")
        with self._lock:
            h = self._handle(file)
            if not (h.writable and isinstance(h.inode, File)):
                raise os_error(errno.EBADF, h.shown)
            self._fault("write", h.root, h.rel)
            f = h.inode
            n = min(len(data), self._room(h.root, f, h.pos, len(data)))
            if n <= 0 and len(data):
                raise os_error(errno.ENOSPC, h.shown)
            chunk = bytes(data[:n])
            if len(f.data) < h.pos:
                f.data.extend(bytes(h.pos - len(f.data)))
            f.data[h.pos : h.pos + n] = chunk
            f.mtime_ns = time.time_ns()
            if n:
                what = f"write {h.shown} [{h.pos}:{h.pos + n}]"
                self._change(f, Write(self._next(), f, h.pos, chunk, what))
            h.pos += n
            return n

    def set_mtime(self, file: Handle, mtime_ns: int) -> None:
        self._delay("write")
        with self._lock:
            h = self._handle(file)
            self._touch(h.inode, mtime_ns, h.shown)

    def set_mtime_at(self, dir: Handle, name: str, mtime_ns: int) -> None:
        self._delay("write")
        with self._lock:
            h = self._dir_handle(dir)
            found = h.inode.entries.get(name)  # type: ignore[attr-defined]
            shown = f"{h.shown}/{name}"
            if found is None:
                raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), shown)
            self._touch(found, mtime_ns, shown)

    def fsync(self, handle: Handle, /) -> None:
        self._delay("fsync")
        with self._lock:
            h = self._handle(handle)
            self._fsync_inode(h.inode, h.root, h.rel)

    def rename_at(self, dir: Handle, src: str, dst: str) -> None:
        self._delay("rename")
        with self._lock:
            h = self._dir_handle(dir)
            self._fault("rename", h.root, h.child(src), h.child(dst))
            d: Dir = h.inode  # type: ignore[assignment]
            moved = d.entries.get(src)
            if moved is None:
                raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), f"{h.shown}/{src}")
            there = d.entries.get(dst)
            if there is moved:
                return
            if there is not None:
                self._check_replace(moved, there, f"{h.shown}/{dst}")
            del d.entries[src]
            d.entries[dst] = moved
            what = f"rename {h.shown}/{src} -> {dst}"
            self._change(d, Rename(self._next(), d, dst, moved, what))

    def unlink_at(self, dir: Handle, name: str) -> None:
        self._delay("unlink")
        with self._lock:
            h = self._dir_handle(dir)
            self._fault("unlink", h.root, h.child(name))
            d: Dir = h.inode  # type: ignore[assignment]
            found = d.entries.get(name)
            shown = f"{h.shown}/{name}"
            if found is None:
                raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), shown)
            if isinstance(found, Dir):
                raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), shown)
            del d.entries[name]
            self._change(d, Unlink(self._next(), d, name, found, f"unlink {shown}"))

    def close(self, handle: Handle, /) -> None:
        with self._lock:
            self._close_now(handle)

    # == internals ===================================================================

    def _touch(self, inode: Inode, mtime_ns: int, shown: str) -> None:
        inode.mtime_ns = mtime_ns
        if isinstance(inode, File):
            self._change(inode, Touch(self._next(), inode, mtime_ns, f"set mtime {shown}"))

    def _fsync_inode(self, inode: Inode, root: str, rel: str) -> None:
        if not isinstance(inode, File | Dir):
            return
        try:
            self._fault("fsync", root, rel)
        except OSError:
            inode.pending.clear()  # fsyncgate: forgotten, never made durable
            raise
        inode.sync()
        if isinstance(inode, File):
            if inode.data == inode.durable and inode.mtime_ns == inode.durable_mtime_ns:
                self._dirty_files.discard(inode)
        elif inode.entries == inode.durable:
            self._dirty_dirs.discard(inode)

    def _new_handle(self, inode: Inode, root: str, rel: str, *, writable: bool = False) -> Handle:
        handle = self._next_handle
        self._next_handle += 1
        self._handles[handle] = OpenHandle(inode, root, rel, writable)
        return handle

    def _handle(self, handle: Handle) -> OpenHandle:
        found = self._handles.get(handle)
        if found is None:
            raise os_error(errno.EBADF, f"handle {handle}")
        return found

    def _dir_handle(self, handle: Handle) -> OpenHandle:
        h = self._handle(handle)
        if not isinstance(h.inode, Dir):
            raise os_error(errno.ENOTDIR, h.shown)
        return h

    def _close_now(self, handle: Handle) -> None:
        if self._handles.pop(handle, None) is None:
            raise os_error(errno.EBADF, f"handle {handle}")

    def _open_in(
        self, parent: Dir, root: str, rel: str, name: str, shown: str
    ) -> tuple[Handle, os.stat_result]:
        found = parent.entries.get(name)
        if found is None:
            raise FileNotFoundError(errno.ENOENT, "no such file", shown)
        if not isinstance(found, File):
            raise NotABlockFile(shown, kind_of(found))
        return self._new_handle(found, root, rel), found.stat()

    @staticmethod
    def _check_replace(moved: Inode, there: Inode, shown: str) -> None:
        if isinstance(there, Dir) and not isinstance(moved, Dir):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), shown)
        if isinstance(moved, Dir) and not isinstance(there, Dir):
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), shown)
        if isinstance(there, Dir) and there.entries:
            raise os_error(errno.ENOTEMPTY, shown)


__all__ = ["SimulatedDisk"]
