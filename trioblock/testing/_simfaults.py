"""The fault controls of a :class:`~trioblock.testing.SimulatedDisk`: power loss,
armed failures, capacity, latency and rot (base of ``SimulatedDisk``; the semantics are
in its docstring and each method's).

Rules kept here:

- Every random choice comes from the seed. A power loss decides each change with a
  ``random.Random`` of its own, seeded with the disk's seed, the number of power losses
  before, what the change is (its operation and path below its data directory, a temp
  name's random suffix left out, its byte range) and how many such changes came before
  it: the same seed and the same changes give the same result, whatever order
  concurrent tasks made them in and wherever the test's directories are. :meth:`rot`
  draws from one ``random.Random(seed)``, in the order of its calls.
- A rule of :meth:`SimFaults.fail` is checked by each call of its operation before the
  call does anything; the oldest matching rule fires and is used up.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path

from ._simfs import (
    Change,
    Dir,
    File,
    Link,
    Outcome,
    PowerLoss,
    Rename,
    Touch,
    Unlink,
    Write,
    lose_power,
)
from ._simtree import SimTree

#: The random part of a temp file's name (trioblock's ``<name>.tmp<8 hex>``).
_TEMP_SUFFIX = re.compile(r"\.tmp[0-9a-f]{8}")
#: What ``statvfs`` reports as the size of a disk without a capacity (1 TiB).
DEFAULT_TOTAL = 1 << 40
#: The operations :meth:`SimFaults.fail` and :meth:`SimFaults.set_latency` name.
OPS = ("open", "read", "write", "fsync", "rename", "unlink", "list", "stat")


def os_error(code: int, shown: str) -> OSError:
    """``OSError(code)`` about ``shown``, as the operating system words it."""
    return OSError(code, os.strerror(code), shown)


@dataclass
class _Rule:
    op: str
    pattern: str | None
    errno: int
    times: int | None
    root: str | None = None


class SimFaults(SimTree):
    """The faults of a simulated disk (see ``SimulatedDisk``)."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        #: the seed every random choice of this disk comes from
        self.seed = seed
        self._rng = random.Random(seed)
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

    def power_loss(self, outcome: Outcome = "random") -> PowerLoss:
        """Cut the power: decide each change not yet durable on its own (kept, dropped,
        or a write torn: kept up to a 512-byte boundary of the file strictly inside it; a
        write within one sector is kept or dropped), apply the kept ones in the order
        they were made, make the result the whole disk, and invalidate every open handle.

        ``outcome``: ``"random"`` (each choice equally likely, drawn from the seed and
        what the change is: the same seed and the same changes give the same result,
        whatever order concurrent tasks made them in) or one answer for every change:
        ``"keep"``, ``"drop"``, or ``"tear"`` (every write torn where it can be, every
        other change kept). Returns what was done with each change. Faults armed with
        :meth:`fail` stay armed.
        """
        with self._lock:
            seen: dict[str, int] = {}

            def chooser(what: str) -> random.Random:
                # Each change's own generator, from the seed, the power loss and what
                # the change is (paths below their roots, temp names' random suffix left
                # out): the choices do not depend on the order in which concurrent tasks
                # made the changes, nor on where the test's directories are.
                key = self._stable(what)
                seen[key] = nth = seen.get(key, 0) + 1
                return random.Random(f"{self.seed}/{self.power_losses}/{key}/{nth}")

            done = lose_power(chooser, self._dirty_files, self._dirty_dirs, outcome)
            self._dirty_files.clear()
            self._dirty_dirs.clear()
            self._handles.clear()
            self.power_losses += 1
            return done

    def fail(
        self,
        op: str,
        path: str | None = None,
        errno: int = errno.EIO,
        times: int | None = 1,
        *,
        root: str | Path | None = None,
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
        or its destination; None matches every call. ``root``: only calls below that
        data directory (one of a node's several; None: any). The call does nothing, except an
        fsync, which forgets the pending changes of its file or directory (fsyncgate:
        they stay visible until a power loss and the next fsync succeeds). Several rules
        may be armed at once; the oldest matching one fires.
        """
        if op not in OPS:
            raise ValueError(f"op must be one of {', '.join(OPS)}, got {op!r}")
        if times is not None and times < 1:
            raise ValueError("times must be at least 1 (or None: always)")
        with self._lock:
            self._rules.append(
                _Rule(op, path, errno, times, None if root is None else self._norm(root))
            )

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

    # == internals ===================================================================

    def _stable(self, what: str) -> str:
        """A change's description without its roots nor its temp names' random part."""
        for root in sorted(self._roots, key=len, reverse=True):
            what = what.replace(root + "/", "/")
        return _TEMP_SUFFIX.sub(".tmp*", what)

    def _delay(self, op: str) -> None:
        seconds = self._latency.get(op) or self._latency.get(None)
        if seconds:
            time.sleep(seconds)

    def _fault(self, op: str, root: str, *rels: str) -> None:
        """Raise the first armed fault of ``op`` matching one of ``rels`` (below
        ``root``), used up."""
        for rule in self._rules:
            if rule.op != op or (rule.root is not None and rule.root != self._norm(root)):
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
            raise os_error(rule.errno, f"{root}/{rels[0]}" if rels[0] else root)

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


__all__ = ["DEFAULT_TOTAL", "OPS", "SimFaults", "os_error"]
