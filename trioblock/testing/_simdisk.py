"""``SimulatedDisk``: an in-memory ``Disk`` (``trioblock._core.disk``) that loses power,
fails, fills up, slows down and rots, deterministically from a seed.

Rules kept here (the fault semantics are in :class:`SimulatedDisk`'s docstring, the
durability model in ``_simfs``):

- It keeps the ``Disk`` contract as the real disk does: a root is a data directory's
  path (made by ``make_dir(root, "")`` or :meth:`SimulatedDisk.write_file`), a rel path
  below it is reached without following anything (a link, a file where a directory
  should be, a FIFO or a directory where a file should be is refused with the errors
  of the contract), errors are ``OSError`` with a real errno, handles are small
  integers (``EBADF`` once closed or after a power loss).
- Every random choice comes from one ``random.Random(seed)``, drawn only by
  :meth:`SimulatedDisk.power_loss` and :meth:`SimulatedDisk.rot`, in the order the
  changes were made: the same seed and the same sequence of calls give the same result.
- One ``threading.RLock`` guards everything (the node calls a disk from worker threads);
  only the latency sleep happens outside it.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import random
import stat
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .._core.disk import DirEntry, Handle, NotABlockFile, NotASubdir, SpaceUsage
from ._simfs import (
    Change,
    Dir,
    File,
    Inode,
    Link,
    Outcome,
    PowerLoss,
    Rename,
    Touch,
    Unlink,
    Write,
    lose_power,
)
from ._simtree import SimTree, kind_of

#: What ``statvfs`` reports as the size of a disk without a capacity (1 TiB).
DEFAULT_TOTAL = 1 << 40
#: The operations :meth:`SimulatedDisk.fail` and :meth:`SimulatedDisk.set_latency` name.
OPS = ("open", "read", "write", "fsync", "rename", "unlink", "list", "stat")


def _error(code: int, shown: str) -> OSError:
    return OSError(code, os.strerror(code), shown)


@dataclass
class _Open:
    """An open handle: what it names, where (for errors and fault matching)."""

    inode: Inode
    root: str
    rel: str
    writable: bool = False
    pos: int = 0

    @property
    def shown(self) -> str:
        return f"{self.root}/{self.rel}" if self.rel else self.root

    def child(self, name: str) -> str:
        return f"{self.rel}/{name}" if self.rel else name


@dataclass
class _Rule:
    op: str
    pattern: str | None
    errno: int
    times: int | None


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


class SimulatedDisk(SimTree):
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

    A disk may hold several roots (a node's several data directories, or the roots of
    several nodes: they then share its capacity, its faults and its power losses; two
    nodes must never share a root). Only file data counts against the capacity; names
    and directories are free, and a removed file frees its space at once even if a
    handle is still open on it.
    """

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.seed = seed
        self._rng = random.Random(seed)
        self._handles: dict[Handle, _Open] = {}
        self._next_handle = 3
        self._seq = 0
        self._rules: list[_Rule] = []
        self._latency: dict[str | None, float] = {}
        self._capacity: int | None = None
        self._root_capacity: dict[str, int] = {}
        self._dirty_files: set[File] = set()
        self._dirty_dirs: set[Dir] = set()
        #: every fault :meth:`fail` armed that fired: ``(op, rel path, errno)``
        self.injected: list[tuple[str, str, int]] = []
        #: how many power losses this disk went through
        self.power_losses = 0

    # == faults ======================================================================

    def power_loss(self, outcome: Outcome = "random") -> PowerLoss:
        """Cut the power: decide each change not yet durable, in the order it was made
        (kept, dropped, or a write torn: kept up to a 512-byte boundary of the file
        strictly inside it; a write within one sector is kept or dropped), make what
        remains the whole disk, and invalidate every open handle.

        ``outcome``: ``"random"`` (each choice drawn from the seed, equally likely) or one
        answer for every change: ``"keep"``, ``"drop"``, or ``"tear"`` (every write torn
        where it can be, every other change kept). Returns what was done with each
        change. Faults armed with :meth:`fail` stay armed.
        """
        with self._lock:
            done = lose_power(self._rng, self._dirty_files, self._dirty_dirs, outcome)
            self._dirty_files.clear()
            self._dirty_dirs.clear()
            self._handles.clear()
            self.power_losses += 1
            return done

    def fail(
        self, op: str, path: str | None = None, errno: int = errno.EIO, times: int | None = 1
    ) -> None:
        """The next ``times`` calls of ``op`` whose path matches raise ``OSError(errno)``
        (``times=None``: every one, until :meth:`clear_faults`).

        ``op``: ``"open"`` (``open_dir``, ``make_dir``, ``open_file``, ``open_file_at``,
        ``create_at``), ``"read"``, ``"write"``, ``"fsync"`` (of a file or a
        directory, also the one ``make_dir`` does), ``"rename"``, ``"unlink"``,
        ``"list"`` (``list_dir``) or ``"stat"`` (``lstat``, ``lstat_at``,
        ``statvfs``). ``path``: a glob (``fnmatch``, ``*`` also matching ``/``) of the
        path *below its data directory*: ``"ab/cd/*"``, ``"*.zst"``, ``"ab/cd"`` (that
        directory), ``""`` (the data directory itself); a rename matches on its source
        or its destination; None matches every call. The call does nothing, except an
        fsync, which forgets the pending changes of its file or directory (fsyncgate:
        they stay visible until a power loss and the next fsync succeeds). Several rules
        may be armed at once; the oldest matching one fires.
        """
        if op not in OPS:
            raise ValueError(f"op must be one of {', '.join(OPS)}, got {op!r}")
        if times is not None and times < 1:
            raise ValueError("times must be at least 1 (or None: always)")
        with self._lock:
            self._rules.append(_Rule(op, path, errno, times))

    def clear_faults(self) -> None:
        """Disarm every rule of :meth:`fail` (the disk works again)."""
        with self._lock:
            self._rules.clear()

    def set_capacity(self, capacity: int | None, *, root: str | Path | None = None) -> None:
        """Hold at most ``capacity`` bytes of file data (None: no limit).

        With ``root``, that data directory becomes a device of its own with this
        capacity (its files count only there); without, the capacity is shared by every
        root without one of its own. A write that does not fit writes what fits and
        returns that count, the next one raises ``ENOSPC``; :meth:`statvfs` reports
        ``total`` = the capacity (1 TiB when unlimited) and ``free`` = what is left.
        Lowering it below what is stored deletes nothing.
        """
        if capacity is not None and capacity < 0:
            raise ValueError("capacity must be >= 0")
        with self._lock:
            if root is None:
                self._capacity = capacity
            elif capacity is None:
                self._root_capacity.pop(self._norm(root), None)
            else:
                self._root_capacity[self._norm(root)] = capacity

    def set_latency(self, seconds: float, op: str | None = None) -> None:
        """Sleep ``seconds`` of **real** time (``time.sleep``, outside the disk's lock)
        before every call of ``op`` (one of :data:`OPS`; ``set_mtime`` counts as
        ``"write"``), or of every call when ``op`` is None; 0 removes it.

        Disk calls are synchronous: with a real clock the node makes them in worker
        threads, so a slow disk slows its operations as a real one would. Under a
        ``MockClock`` trioblock makes them inline on the Trio thread and virtual time
        does not move during a call: the latency then only costs real time, and cannot
        make a deadline expire. Use it with the real clock.
        """
        if op is not None and op not in OPS:
            raise ValueError(f"op must be one of {', '.join(OPS)}, got {op!r}")
        if seconds < 0:
            raise ValueError("seconds must be >= 0")
        with self._lock:
            if seconds:
                self._latency[op] = seconds
            else:
                self._latency.pop(op, None)

    def rot(self, path: str | Path, nbytes: int = 1) -> list[int]:
        """Flip ``nbytes`` bytes (at offsets drawn from the seed, each XORed with a
        nonzero mask) of the regular file at ``path`` (a full path: data directory and
        rel path), in what is stored and what is read alike, with no change of size or
        mtime: silent damage at rest. Returns the offsets."""
        with self._lock:
            file = self._regular(path)
            if not file.data:
                raise ValueError(f"{path} is empty: nothing to rot")
            offsets = sorted(self._rng.sample(range(len(file.data)), min(nbytes, len(file.data))))
            for i in offsets:
                mask = self._rng.randrange(1, 256)
                file.data[i] ^= mask
                if i < len(file.durable):
                    file.durable[i] ^= mask
            return offsets

    def pending(self) -> list[str]:
        """Every change not durable yet (``"<op> <path>"``), in the order made."""
        with self._lock:
            changes: list[Change] = [c for f in self._dirty_files for c in f.pending]
            changes += [c for d in self._dirty_dirs for c in d.pending]
            return [c.what for c in sorted(changes, key=lambda c: c.seq)]

    # == the Disk contract ===========================================================

    def open_dir(self, root: str, rel: str = "", /) -> Handle:
        self._delay("open")
        with self._lock:
            self._fault("open", rel)
            return self._new_handle(self._dir_below(root, rel), root, rel)

    def make_dir(self, root: str, rel: str, *, fsync: bool) -> tuple[Handle, bool]:
        self._delay("open")
        with self._lock:
            self._fault("open", rel)
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
                self._fsync_inode(parent, head)
            return self._new_handle(found, root, rel), created

    def list_dir(self, dir: Handle) -> Sequence[DirEntry]:
        self._delay("list")
        with self._lock:
            h = self._handle(dir)
            if not isinstance(h.inode, Dir):
                raise _error(errno.ENOTDIR, h.shown)
            self._fault("list", h.rel)
            d = h.inode
            return [_Entry(self, d, name, inode) for name, inode in d.entries.items()]

    def lstat(self, root: str, rel: str, /) -> os.stat_result | None:
        self._delay("stat")
        with self._lock:
            self._fault("stat", rel)
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
            self._fault("stat", h.child(name))
            found = h.inode.entries.get(name)  # type: ignore[attr-defined]
            return None if found is None else found.stat()

    def statvfs(self, root: str) -> SpaceUsage:
        self._delay("stat")
        with self._lock:
            self._fault("stat", "")
            self._root_dir(root)
            total, used = self._space(self._norm(root))
            return SpaceUsage(total, max(0, total - used))

    def open_file(self, root: str, rel: str, /) -> tuple[Handle, os.stat_result]:
        self._delay("open")
        with self._lock:
            self._fault("open", rel)
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
            self._fault("open", h.child(name))
            return self._open_in(h.inode, h.root, h.child(name), name, shown)  # type: ignore[arg-type]

    def create_at(self, dir: Handle, name: str) -> Handle:
        self._delay("open")
        with self._lock:
            h = self._dir_handle(dir)
            rel = h.child(name)
            self._fault("open", rel)
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
                raise _error(errno.EISDIR, h.shown)
            if h.writable or not isinstance(h.inode, File):
                raise _error(errno.EBADF, h.shown)
            self._fault("read", h.rel)
            data = bytes(h.inode.data[h.pos : h.pos + size])
            h.pos += len(data)
            return data

    def write(self, file: Handle, data: bytes | memoryview, /) -> int:
        self._delay("write")
        with self._lock:
            h = self._handle(file)
            if not (h.writable and isinstance(h.inode, File)):
                raise _error(errno.EBADF, h.shown)
            self._fault("write", h.rel)
            f = h.inode
            n = min(len(data), self._room(h.root, f, h.pos, len(data)))
            if n <= 0 and len(data):
                raise _error(errno.ENOSPC, h.shown)
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
            self._fsync_inode(h.inode, h.rel)

    def rename_at(self, dir: Handle, src: str, dst: str) -> None:
        self._delay("rename")
        with self._lock:
            h = self._dir_handle(dir)
            self._fault("rename", h.child(src), h.child(dst))
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
            self._fault("unlink", h.child(name))
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

    def _delay(self, op: str) -> None:
        seconds = self._latency.get(op) or self._latency.get(None)
        if seconds:
            time.sleep(seconds)

    def _fault(self, op: str, *rels: str) -> None:
        """Raise the first armed fault of ``op`` matching one of ``rels`` (used up)."""
        for rule in self._rules:
            if rule.op != op:
                continue
            if rule.pattern is not None and not any(
                fnmatch.fnmatchcase(rel, rule.pattern) for rel in rels
            ):
                continue
            if rule.times is not None:
                rule.times -= 1
                if rule.times == 0:
                    self._rules.remove(rule)
            self.injected.append((op, rels[0], rule.errno))
            raise _error(rule.errno, rels[0])

    def _next(self) -> int:
        self._seq += 1
        return self._seq

    def _change(self, inode: File | Dir, change: Change) -> None:
        if isinstance(inode, File):
            assert isinstance(change, Write | Touch)
            inode.pending.append(change)
            self._dirty_files.add(inode)
        else:
            assert isinstance(change, Link | Rename | Unlink)
            inode.pending.append(change)
            self._dirty_dirs.add(inode)

    def _touch(self, inode: Inode, mtime_ns: int, shown: str) -> None:
        inode.mtime_ns = mtime_ns
        if isinstance(inode, File):
            self._change(inode, Touch(self._next(), inode, mtime_ns, f"set mtime {shown}"))

    def _fsync_inode(self, inode: Inode, rel: str) -> None:
        if not isinstance(inode, File | Dir):
            return
        try:
            self._fault("fsync", rel)
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
        self._handles[handle] = _Open(inode, root, rel, writable)
        return handle

    def _handle(self, handle: Handle) -> _Open:
        found = self._handles.get(handle)
        if found is None:
            raise _error(errno.EBADF, f"handle {handle}")
        return found

    def _dir_handle(self, handle: Handle) -> _Open:
        h = self._handle(handle)
        if not isinstance(h.inode, Dir):
            raise _error(errno.ENOTDIR, h.shown)
        return h

    def _close_now(self, handle: Handle) -> None:
        if self._handles.pop(handle, None) is None:
            raise _error(errno.EBADF, f"handle {handle}")

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
            raise _error(errno.ENOTEMPTY, shown)

    def _room(self, root: str, file: File, pos: int, size: int) -> int:
        """How many of ``size`` bytes written at ``pos`` of ``file`` fit."""
        total, used = self._space(self._norm(root), limited_only=True)
        if total < 0:
            return size
        grow_from = max(pos, len(file.data))
        return max(0, grow_from - pos) + max(0, total - used)

    def _space(self, root: str, *, limited_only: bool = False) -> tuple[int, int]:
        """``(total, used)`` of the device holding ``root`` (total -1: no limit, when
        ``limited_only``)."""
        own = self._root_capacity.get(root)
        if own is not None:
            return own, self._used([root])
        shared = [r for r in self._roots if r not in self._root_capacity]
        if self._capacity is None:
            return (-1, 0) if limited_only else (DEFAULT_TOTAL, self._used(shared))
        return self._capacity, self._used(shared)


__all__ = ["DEFAULT_TOTAL", "OPS", "PowerLoss", "SimulatedDisk"]
