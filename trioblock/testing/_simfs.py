"""The in-memory file system under :class:`~trioblock.testing.SimulatedDisk`, with two
views of everything: what a running program sees (``live``) and what the device is
guaranteed to hold (``durable``).

Rules kept here:

- A regular file's ``data`` is what reads return (the page cache); ``durable`` is what
  the device holds for certain. Each write since the last successful ``fsync`` of the
  file is a pending :class:`Write`; a successful fsync applies them to ``durable`` in
  order. An explicit mtime change is a pending :class:`Touch`, made durable the same
  way.
- A directory's ``entries`` are what lookups see; ``durable`` the entries the device
  holds for certain. Each create, mkdir, rename or unlink since the directory's last
  successful fsync is a pending :class:`Link`, :class:`Rename` or :class:`Unlink`; the
  directory's fsync applies them to ``durable`` in order.
- A failed fsync (fsyncgate) forgets the pending changes of that file or directory
  without applying them: the live view keeps them (as the page cache does) until a power
  loss, and the next fsync has nothing left to do.
- A power loss (:func:`lose_power`) decides every pending change on its own, with a
  generator the caller gives for the change's description: kept, dropped, or (a write
  only) torn — kept up to a 512-byte boundary of the file strictly inside the write (a
  write within one sector cannot tear: it is kept or dropped). The kept changes are
  applied in the order they were made, and the live view of every file and directory is
  then its durable view. A kept rename gives the inode its new name whether or not the
  change that first named it was kept (each change is independent); a kept unlink
  removes the name only if it still names the same inode.
"""

from __future__ import annotations

import os
import random
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, TypeAlias

#: The sector size: a torn write keeps whole sectors of the file up to a boundary.
SECTOR = 512
_DEV = 0x51D

Outcome: TypeAlias = Literal["random", "keep", "drop", "tear"]


class Inode:
    """Anything a directory entry can name."""

    __slots__ = ("ino", "mode", "mtime_ns")

    def __init__(self, ino: int, mode: int, mtime_ns: int) -> None:
        self.ino = ino
        self.mode = mode
        self.mtime_ns = mtime_ns

    def size(self) -> int:
        return 0

    def nlink(self) -> int:
        return 1

    def stat(self) -> os.stat_result:
        t = self.mtime_ns
        fields = (self.mode, self.ino, _DEV, self.nlink(), 0, 0, self.size())
        times = (t // 10**9,) * 3 + (t / 1e9,) * 3 + (t,) * 3
        return os.stat_result(fields + times + (4096, (self.size() + 511) // 512, 0))


class Special(Inode):
    """A symbolic link, FIFO or socket: only ever looked at, never followed nor read."""

    __slots__ = ("target",)

    def __init__(self, ino: int, mode: int, mtime_ns: int, target: str = "") -> None:
        super().__init__(ino, mode, mtime_ns)
        self.target = target

    def size(self) -> int:
        return len(self.target)


class File(Inode):
    """A regular file: its live data, its durable data and its pending changes."""

    __slots__ = ("data", "durable", "durable_mtime_ns", "pending")

    def __init__(self, ino: int, mtime_ns: int, data: bytes = b"", *, durable: bool) -> None:
        super().__init__(ino, stat.S_IFREG | 0o644, mtime_ns)
        self.data = bytearray(data)
        self.durable = bytearray(data if durable else b"")
        self.durable_mtime_ns = mtime_ns
        self.pending: list[Write | Touch] = []

    def size(self) -> int:
        return len(self.data)

    def sync(self) -> None:
        for change in self.pending:
            change.apply(self)
        self.pending.clear()


class Dir(Inode):
    """A directory: its live entries, its durable entries and its pending changes."""

    __slots__ = ("durable", "entries", "pending")

    def __init__(self, ino: int, mtime_ns: int) -> None:
        super().__init__(ino, stat.S_IFDIR | 0o755, mtime_ns)
        self.entries: dict[str, Inode] = {}
        self.durable: dict[str, Inode] = {}
        self.pending: list[Link | Rename | Unlink] = []

    def nlink(self) -> int:
        return 2 + sum(isinstance(i, Dir) for i in self.entries.values())

    def sync(self) -> None:
        for change in self.pending:
            change.apply(self.durable)
        self.pending.clear()


# -- pending changes ----------------------------------------------------------------------


@dataclass
class Write:
    """``data`` written at ``offset`` of a file."""

    seq: int
    file: File
    offset: int
    data: bytes
    what: str

    def apply(self, file: File, keep: int | None = None) -> None:
        data = self.data if keep is None else self.data[:keep]
        end = self.offset + len(data)
        if len(file.durable) < self.offset:
            file.durable.extend(bytes(self.offset - len(file.durable)))
        file.durable[self.offset : end] = data

    def tear_points(self) -> list[int]:
        """Byte counts of this write that end on a sector boundary strictly inside it."""
        first = (self.offset // SECTOR + 1) * SECTOR
        end = self.offset + len(self.data)
        return [b - self.offset for b in range(first, end, SECTOR)]


@dataclass
class Touch:
    """An explicit change of a file's times."""

    seq: int
    file: File
    mtime_ns: int
    what: str

    def apply(self, file: File) -> None:
        file.durable_mtime_ns = self.mtime_ns


@dataclass
class Link:
    """A new name (a created file or a made directory)."""

    seq: int
    dir: Dir
    name: str
    inode: Inode
    what: str

    def apply(self, entries: dict[str, Inode]) -> None:
        entries[self.name] = self.inode


@dataclass
class Rename:
    """An inode's name in its directory changed to ``dst`` (replacing what was there)."""

    seq: int
    dir: Dir
    dst: str
    inode: Inode
    what: str

    def apply(self, entries: dict[str, Inode]) -> None:
        for name in [n for n, i in entries.items() if i is self.inode]:
            del entries[name]
        entries[self.dst] = self.inode


@dataclass
class Unlink:
    """A name removed."""

    seq: int
    dir: Dir
    name: str
    inode: Inode
    what: str

    def apply(self, entries: dict[str, Inode]) -> None:
        if entries.get(self.name) is self.inode:
            del entries[self.name]


Change: TypeAlias = Write | Touch | Link | Rename | Unlink


@dataclass(frozen=True)
class PowerLoss:
    """What :meth:`SimulatedDisk.power_loss` did with each change that was not durable
    (each described as ``"<op> <path>"``, in the order the changes were made)."""

    kept: tuple[str, ...] = ()
    dropped: tuple[str, ...] = ()
    torn: tuple[str, ...] = ()


@dataclass
class _Decisions:
    kept: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    torn: list[str] = field(default_factory=list)


def lose_power(
    chooser: Callable[[str], random.Random], files: set[File], dirs: set[Dir], outcome: Outcome
) -> PowerLoss:
    """Decide every pending change of ``files`` and ``dirs`` (module rules), then make
    every live view its durable one. Each change is decided with the generator
    ``chooser`` gives for its description (``what``); ``outcome`` other than
    ``"random"`` decides every change the same way (``"tear"``: every write torn where it
    can be, every other change kept)."""
    changes: list[Change] = [c for f in files for c in f.pending]
    changes += [c for d in dirs for c in d.pending]
    changes.sort(key=lambda c: c.seq)
    done = _Decisions()
    for change in changes:
        rng = chooser(change.what)
        if isinstance(change, Write):
            points = change.tear_points()
            choice = _choose(rng, outcome, tearable=bool(points))
            if choice == "tear":
                keep = rng.choice(points)
                change.apply(change.file, keep)
                done.torn.append(f"{change.what} (kept {keep} of {len(change.data)} bytes)")
                continue
        else:
            choice = _choose(rng, outcome, tearable=False)
        if choice == "keep":
            if isinstance(change, Write | Touch):
                change.apply(change.file)
            else:
                change.apply(change.dir.durable)
            done.kept.append(change.what)
        else:
            done.dropped.append(change.what)
    for f in files:
        f.pending.clear()
        f.data = bytearray(f.durable)
        f.mtime_ns = f.durable_mtime_ns
    for d in dirs:
        d.pending.clear()
        d.entries = dict(d.durable)
    return PowerLoss(tuple(done.kept), tuple(done.dropped), tuple(done.torn))


def _choose(rng: random.Random, outcome: Outcome, *, tearable: bool) -> str:
    if outcome == "random":
        return rng.choice(("keep", "drop", "tear") if tearable else ("keep", "drop"))
    if outcome == "tear":
        return "tear" if tearable else "keep"
    return outcome


__all__ = [
    "SECTOR",
    "Change",
    "Dir",
    "File",
    "Inode",
    "Link",
    "Outcome",
    "PowerLoss",
    "Rename",
    "Special",
    "Touch",
    "Unlink",
    "Write",
    "lose_power",
]
