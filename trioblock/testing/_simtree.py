"""The roots and paths of a :class:`~trioblock.testing.SimulatedDisk`, and the helpers a
test uses to look at it and to plant things on it, past the ``Disk`` contract.

Rules kept here:

- A root is a data directory's path, normalised (``os.path.normpath``); roots are
  independent trees, except that a path below an existing root (``make_dir(path, "")``,
  ``open_dir(path)``) is found in that root's tree, as a subdirectory would be.
- The helpers take full paths (``root/rel``), never follow anything, are never
  subject to :meth:`~trioblock.testing.SimulatedDisk.fail` or latency, and what they
  change is durable at once (it stands for what was on the disk before the test).
"""

from __future__ import annotations

import errno
import os
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .._core.disk import Handle, NotASubdir
from ._simfs import Dir, File, Inode, Link, Rename, Special


def kind_of(inode: Inode) -> str:
    """What ``inode`` is, in the words of ``NotABlockFile``."""
    if isinstance(inode, Dir):
        return "directory"
    if stat.S_ISLNK(inode.mode):
        return "symbolic link"
    if stat.S_ISFIFO(inode.mode):
        return "FIFO"
    return "special file"


def _absent(shown: str) -> FileNotFoundError:
    return FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), shown)


@dataclass
class OpenHandle:
    """An open handle: what it names, and where (for errors and fault matching)."""

    inode: Inode
    root: str
    rel: str
    writable: bool = False
    pos: int = 0

    @property
    def shown(self) -> str:
        return f"{self.root}/{self.rel}" if self.rel else self.root

    def child(self, name: str) -> str:
        """The rel path of ``name`` in this directory."""
        return f"{self.rel}/{name}" if self.rel else name


class SimTree:
    """The trees of a simulated disk's roots (base of ``SimulatedDisk``)."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._roots: dict[str, Dir] = {}
        self._last_ino = 1
        self._handles: dict[Handle, OpenHandle] = {}
        self._next_handle = 3

    # == introspection and set-up, for tests ==========================================

    def roots(self) -> list[str]:
        """The data directories this disk holds, sorted."""
        with self._lock:
            return sorted(self._roots)

    def files(self, under: str | Path | None = None) -> list[str]:
        """Full paths of every regular file (as a running program sees them), sorted;
        only those below the directory ``under`` when given."""
        with self._lock:
            found: list[str] = []
            for root, d in self._roots.items():
                self._collect(d, root, found)
            if under is None:
                return sorted(found)
            prefix = self._norm(under) + "/"
            return sorted(p for p in found if p.startswith(prefix))

    def read_file(self, path: str | Path) -> bytes:
        """The content of a regular file as a running program reads it
        (``FileNotFoundError`` when absent, ``IsADirectoryError`` when not a file)."""
        with self._lock:
            return bytes(self._regular(path).data)

    def durable_file(self, path: str | Path) -> bytes | None:
        """What a power loss is sure to leave of a regular file: its content as of its
        last fsync, if its name (and each directory's on the way) is durable; else
        None."""
        with self._lock:
            root, rel = self._locate(path)
            inode: Inode = self._roots[root]
            for part in rel.split("/") if rel else []:
                if not isinstance(inode, Dir) or part not in inode.durable:
                    return None
                inode = inode.durable[part]
            return bytes(inode.durable) if isinstance(inode, File) else None

    def exists(self, path: str | Path) -> bool:
        """Whether anything is at ``path`` (not following a link)."""
        with self._lock:
            try:
                self._lookup(path)
            except (FileNotFoundError, NotADirectoryError):
                return False
            return True

    def write_file(self, path: str | Path, data: bytes, *, mtime_ns: int | None = None) -> None:
        """Put a regular file holding ``data`` at ``path`` (below an existing root),
        making missing directories and replacing what was there; durable at once."""
        with self._lock:
            parent, name = self._parent(path, make=True)
            t = time.time_ns() if mtime_ns is None else mtime_ns
            self._plant(parent, name, File(self._ino(), t, data, durable=True))

    def symlink(self, path: str | Path, target: str) -> None:
        """Put a symbolic link to ``target`` at ``path`` (never followed by the disk)."""
        with self._lock:
            parent, name = self._parent(path, make=True)
            self._plant(parent, name, Special(self._ino(), stat.S_IFLNK | 0o777, 0, target))

    def mkfifo(self, path: str | Path) -> None:
        """Put a FIFO at ``path`` (opening it for a block is refused, never blocks)."""
        with self._lock:
            parent, name = self._parent(path, make=True)
            self._plant(parent, name, Special(self._ino(), stat.S_IFIFO | 0o644, 0))

    def delete(self, path: str | Path) -> None:
        """Remove the file, link or whole directory tree at ``path`` (a root: the whole
        data directory), durably (``rm -rf`` by an operator)."""
        with self._lock:
            key = self._norm(path)
            if key in self._roots:
                del self._roots[key]
                return
            parent, name = self._parent(path, make=False)
            gone = parent.entries.pop(name, None)
            if gone is None:
                raise _absent(key)
            parent.durable.pop(name, None)
            parent.pending = [
                c
                for c in parent.pending
                if c.inode is not gone
                and not (isinstance(c, Link) and c.name == name)
                and not (isinstance(c, Rename) and c.dst == name)
            ]

    # == internals =====================================================================

    @staticmethod
    def _norm(path: str | Path) -> str:
        return os.path.normpath(str(path))

    def _ino(self) -> int:
        self._last_ino += 1
        return self._last_ino

    def _locate(self, path: str | Path) -> tuple[str, str]:
        """``(root, rel)`` of a full path below (or at) a root: the longest one."""
        p = self._norm(path)
        best = ""
        for root in self._roots:
            if (p == root or p.startswith(root.rstrip("/") + "/")) and len(root) > len(best):
                best = root
        if not best:
            raise _absent(p)
        return best, p[len(best) :].strip("/")

    def _lookup(self, path: str | Path) -> Inode:
        root, rel = self._locate(path)
        inode: Inode = self._roots[root]
        for part in rel.split("/") if rel else []:
            if not isinstance(inode, Dir):
                raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(path))
            if part not in inode.entries:
                raise _absent(str(path))
            inode = inode.entries[part]
        return inode

    def _regular(self, path: str | Path) -> File:
        found = self._lookup(path)
        if not isinstance(found, File):
            raise IsADirectoryError(errno.EISDIR, f"not a regular file ({kind_of(found)})", path)
        return found

    def _root_dir(self, root: str) -> Dir:
        """The directory of a root (trusted, as the real disk's roots)."""
        found = self._roots.get(self._norm(root))
        if found is not None:
            return found
        inode = self._lookup(root)
        if not isinstance(inode, Dir):
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), root)
        return inode

    def _dir_below(self, root: str, rel: str) -> Dir:
        """``root/rel`` as a directory, following nothing below the root."""
        d = self._root_dir(root)
        done = root
        for part in rel.split("/") if rel else []:
            done = f"{done}/{part}"
            child = d.entries.get(part)
            if child is None:
                raise FileNotFoundError(errno.ENOENT, "no such directory", f"{root}/{rel}")
            if not isinstance(child, Dir):
                raise NotASubdir(done)
            d = child
        return d

    def _make_root(self, root: str) -> bool:
        """``mkdir -p root`` (durable: the operator's); whether it was made."""
        try:
            self._root_dir(root)
            return False
        except FileNotFoundError:
            pass
        key = self._norm(root)
        try:
            parent, name = self._parent(key, make=True)
        except FileNotFoundError:  # not below another root: a root of its own
            self._roots[key] = Dir(self._ino(), time.time_ns())
            return True
        self._plant(parent, name, Dir(self._ino(), time.time_ns()))
        return True

    def _parent(self, path: str | Path, *, make: bool) -> tuple[Dir, str]:
        """The directory holding ``path`` (below a root) and its name there."""
        root, rel = self._locate(path)
        if not rel:
            raise ValueError(f"{path} is a data directory, not a path below one")
        d = self._roots[root]
        *dirs, name = rel.split("/")
        for part in dirs:
            child = d.entries.get(part)
            if child is None and make:
                child = Dir(self._ino(), time.time_ns())
                self._plant(d, part, child)
            if not isinstance(child, Dir):
                raise _absent(str(path)) if child is None else NotASubdir(str(path))
            d = child
        return d, name

    @staticmethod
    def _plant(parent: Dir, name: str, inode: Inode) -> None:
        parent.entries[name] = inode
        parent.durable[name] = inode

    def _collect(self, d: Dir, path: str, found: list[str]) -> None:
        for name, inode in d.entries.items():
            if isinstance(inode, File):
                found.append(f"{path}/{name}")
            elif isinstance(inode, Dir):
                self._collect(inode, f"{path}/{name}", found)

    def _used(self, roots: list[str]) -> int:
        """Bytes of file data reachable from ``roots`` (each file once)."""
        seen: set[int] = set()
        total = 0
        stack: list[Dir] = [self._roots[r] for r in roots if r in self._roots]
        while stack:
            d = stack.pop()
            for inode in d.entries.values():
                if isinstance(inode, Dir):
                    stack.append(inode)
                elif isinstance(inode, File) and inode.ino not in seen:
                    seen.add(inode.ino)
                    total += len(inode.data)
        return total


__all__ = ["OpenHandle", "SimTree", "kind_of"]
