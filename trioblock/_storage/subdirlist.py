"""Counting the block copies of a range of ``aa/bb`` subdirectories (the stored-blocks
rebuild's listing).

Rules kept here:

- Only lowercase hex pairs are ``aa`` and ``bb`` levels, and only real directories:
  they are opened through the node's ``Disk`` without following links (a link or a
  file in their place holds nothing).
- A copy is a regular file named like a block of its ``aa/bb``; its size is the file's.
- An absent ``aa`` or ``bb`` holds nothing and costs one failed open (``aa``) or nothing
  (``bb``: only those listed in their ``aa`` are opened).
- A listing stops after the subdirectory where the caller's budget of directory entries
  was reached, so that one call stays short whatever the store holds.

Blocking: callers run it in a worker thread.
"""

from __future__ import annotations

import errno
import stat
from collections.abc import Sequence

from .._core.disk import Disk, Handle, NotASubdir
from .paths import BLOCK_NAME_RE, SUBDIR_NAME_RE


def list_subdirs(
    disk: Disk, roots: Sequence[str], lo: int, hi: int, budget: int
) -> tuple[int, dict[int, tuple[int, int]], set[int], int]:
    """List the subdirectories ``lo <= sub < hi`` (all of one ``aa``) in every data
    directory of ``roots``, in order, stopping after the one where ``budget`` entries
    have been seen: ``(end, found, unreadable, seen)`` where ``end`` is the first
    subdirectory not listed, ``found`` the counts of those holding copies (absent or
    empty ones hold none) and ``unreadable`` those that could not be read."""
    aa = f"{lo >> 8:02x}"
    high = (lo >> 8) << 8
    everything = set(range(lo, hi))
    opened: list[tuple[str, Handle, set[int]]] = []
    try:
        for root in roots:
            try:
                afd = disk.open_dir(root, aa)
            except (FileNotFoundError, NotASubdir):
                continue
            except OSError:
                return hi, {}, everything, 0
            opened.append((root, afd, set()))
            try:
                names = [e.name for e in disk.list_dir(afd)]
            except OSError:
                return hi, {}, everything, 0
            present = opened[-1][2]
            for bb in names:
                if SUBDIR_NAME_RE.match(bb):
                    sub = high | int(bb, 16)
                    if lo <= sub < hi:
                        present.add(sub)
        found: dict[int, tuple[int, int]] = {}
        unreadable: set[int] = set()
        seen = 0
        for sub in sorted(set().union(*(present for _r, _fd, present in opened))):
            blocks = size = 0
            bb = f"{sub & 0xFF:02x}"
            for root, _afd, present in opened:
                if sub not in present:
                    continue
                counted = _list_subdir(disk, root, aa, bb)
                if counted is None:
                    unreadable.add(sub)
                    continue
                blocks += counted[0]
                size += counted[1]
                seen += counted[2]
            if blocks:
                found[sub] = (blocks, size)
            if seen >= budget:
                return sub + 1, found, unreadable, seen
        return hi, found, unreadable, seen
    finally:
        for _root, afd, _present in opened:
            disk.close(afd)


def _list_subdir(disk: Disk, root: str, aa: str, bb: str) -> tuple[int, int, int] | None:
    """``(copies, bytes, entries)`` of one ``aa/bb``; None when it cannot be read."""
    try:
        bfd = disk.open_dir(root, f"{aa}/{bb}")
    except (FileNotFoundError, NotASubdir):
        return 0, 0, 0
    except OSError:
        return None
    prefix = aa + bb
    blocks = size = entries = 0
    try:
        for entry in disk.list_dir(bfd):
            entries += 1
            m = BLOCK_NAME_RE.match(entry.name)
            if m is None or not m.group(1).startswith(prefix):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if stat.S_ISREG(st.st_mode):
                blocks += 1
                size += st.st_size
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return 0, 0, entries
        return None
    finally:
        disk.close(bfd)
    return blocks, size, entries


__all__ = ["list_subdirs"]
