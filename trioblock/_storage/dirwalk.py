"""The one walk over a data directory, shared by every reader of the tree.

``walk_data_dir`` lists ``<dir>/<aa>/<bb>/`` in hash order and says what each entry is
(:class:`EntryKind`): the start-up and background temp sweeps, the scrub, repair and
rebalance walks (``BlockWalk``), and ``verify-dir`` all use it.

Rules kept here:

- Only lowercase hex pairs are ``aa`` and ``bb`` levels, and only real directories: a
  symbolic link, a file or a non-hex name in their place is reported (``NOT_A_DIR`` or
  ``OTHER``), never entered. Directories are opened through the node's ``Disk``,
  which never follows a link below the root.
- In ``aa/bb``, a regular file named like a block of that subdirectory is a ``BLOCK``;
  ``*.tmp<8 hex>`` regular files are ``TEMP``; anything else regular is ``OTHER``; a
  FIFO, device, socket, directory or link is ``NOT_A_FILE`` (never read).
- At the top, the marker and ``lost+found`` are expected; ``trioblock-marker.tmp<8 hex>``
  (a crash during the very first start-up) is ``TEMP``; other entries are ``OTHER``.
- A directory that cannot be listed (``EACCES``, ``EIO``...) is ``UNREADABLE`` and the
  walk goes on; one that vanished meanwhile is skipped silently.
- ``start_after`` (a hex prefix already done) skips subdirectories wholly before it
  without listing them, so a resumed walk costs nothing for the finished part.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .._core.block import BlockHeader
from .._core.disk import DirEntry, Disk, Handle, NotASubdir
from .._core.hashing import Hash
from .nofollow import describe_mode
from .paths import (
    BLOCK_NAME_RE,
    LOST_AND_FOUND,
    MARKER_NAME,
    MARKER_TEMP_RE,
    SUBDIR_NAME_RE,
    TMP_SUFFIX_RE,
    BlockLocation,
)
from .realdisk import RealDisk


class EntryKind(enum.Enum):
    BLOCK = "block"
    TEMP = "temp"
    OTHER = "other"
    NOT_A_FILE = "not a regular file"
    NOT_A_DIR = "not a directory"
    UNREADABLE = "unreadable"


@dataclass(frozen=True, slots=True)
class WalkEntry:
    kind: EntryKind
    path: str
    #: the copy, for ``BLOCK``
    loc: BlockLocation | None = None
    #: what went wrong for ``UNREADABLE``; what it is for ``NOT_A_FILE`` and
    #: ``NOT_A_DIR`` ("a FIFO", "a symbolic link")
    error: str | None = None
    #: ``"aa" + "bb"`` of the subdirectory ("" at the top level)
    subdir: str = ""


def _listing(disk: Disk, dir: Handle) -> list[DirEntry]:
    return sorted(disk.list_dir(dir), key=lambda e: e.name)


def _error(exc: OSError) -> str:
    return f"{type(exc).__name__}: {exc.strerror or exc}"


def walk_data_dir(
    disk: Disk,
    root: Path | str,
    start_after: str = "",
    *,
    stat: bool = True,
    top_level: bool = True,
) -> Iterator[WalkEntry]:
    """Every entry under the data directory ``root``, in hash order (see module rules).

    With ``stat=False`` block locations carry size and mtime 0 (a scrub needs neither,
    and a ``stat`` per file costs more than listing it). ``top_level=False`` leaves out
    the top-level entries other than the ``aa`` directories.
    """
    root_s = str(root)
    try:
        rfd = disk.open_dir(root_s)
    except FileNotFoundError:
        return
    except OSError as exc:
        yield WalkEntry(EntryKind.UNREADABLE, root_s, error=_error(exc))
        return
    try:
        try:
            level1 = _listing(disk, rfd)
        except OSError as exc:
            yield WalkEntry(EntryKind.UNREADABLE, root_s, error=_error(exc))
            return
        for e1 in level1:
            path1 = f"{root_s}/{e1.name}"
            if not SUBDIR_NAME_RE.match(e1.name):
                if top_level and e1.name not in (MARKER_NAME, LOST_AND_FOUND):
                    if MARKER_TEMP_RE.match(e1.name) and _is_regular(e1):
                        yield WalkEntry(EntryKind.TEMP, path1)
                    else:
                        yield WalkEntry(EntryKind.OTHER, path1)
                continue
            if start_after and e1.name < start_after[:2]:
                continue
            yield from _walk_level2(disk, root_s, e1, path1, start_after, stat)
    finally:
        disk.close(rfd)


def _is_regular(entry: DirEntry) -> bool:
    try:
        return entry.is_file(follow_symlinks=False)
    except OSError:
        return False


def _what(entry: DirEntry) -> str:
    try:
        return "a " + describe_mode(entry.stat(follow_symlinks=False).st_mode)
    except OSError:
        return "not a regular file"


def _is_dir(entry: DirEntry) -> bool:
    try:
        return entry.is_dir(follow_symlinks=False)
    except OSError:
        return False


def _walk_level2(
    disk: Disk, root: str, e1: DirEntry, path1: str, start_after: str, stat: bool
) -> Iterator[WalkEntry]:
    try:
        afd = disk.open_dir(root, e1.name)
    except FileNotFoundError:
        return
    except NotASubdir:
        yield WalkEntry(EntryKind.NOT_A_DIR, path1, error=_what(e1))
        return
    except OSError as exc:
        yield WalkEntry(EntryKind.UNREADABLE, path1, error=_error(exc))
        return
    try:
        try:
            level2 = _listing(disk, afd)
        except OSError as exc:
            yield WalkEntry(EntryKind.UNREADABLE, path1, error=_error(exc))
            return
        for e2 in level2:
            path2 = f"{path1}/{e2.name}"
            if not SUBDIR_NAME_RE.match(e2.name):
                yield WalkEntry(EntryKind.OTHER, path2, subdir=e1.name)
                continue
            sub = e1.name + e2.name
            if start_after and sub < start_after[:4]:
                continue
            try:
                bfd = disk.open_dir(root, f"{e1.name}/{e2.name}")
            except FileNotFoundError:
                continue
            except NotASubdir:
                yield WalkEntry(EntryKind.NOT_A_DIR, path2, error=_what(e2), subdir=sub)
                continue
            except OSError as exc:
                yield WalkEntry(EntryKind.UNREADABLE, path2, error=_error(exc), subdir=sub)
                continue
            try:
                # Classified while the descriptor is open: a DirEntry stats through it.
                found = list(_files(_listing(disk, bfd), path2, sub, start_after, stat))
            except OSError as exc:
                found = [WalkEntry(EntryKind.UNREADABLE, path2, error=_error(exc), subdir=sub)]
            finally:
                disk.close(bfd)
            yield from found
    finally:
        disk.close(afd)


def _files(
    entries: list[DirEntry], path2: str, sub: str, start_after: str, stat: bool
) -> Iterator[WalkEntry]:
    for entry in entries:
        name = entry.name
        path = f"{path2}/{name}"
        m = BLOCK_NAME_RE.match(name)
        if m is not None and m.group(1).startswith(sub):
            if m.group(1) <= start_after:
                continue
            try:
                if not entry.is_file(follow_symlinks=False):
                    yield WalkEntry(EntryKind.NOT_A_FILE, path, error=_what(entry), subdir=sub)
                    continue
                size = mtime = 0
                if stat:
                    st = entry.stat(follow_symlinks=False)
                    size, mtime = st.st_size, st.st_mtime_ns
            except FileNotFoundError:
                continue
            header = BlockHeader.COMPRESSED if m.group(2) else BlockHeader.PLAIN
            loc = BlockLocation(Hash(bytes.fromhex(m.group(1))), path, header, size, mtime)
            yield WalkEntry(EntryKind.BLOCK, path, loc=loc, subdir=sub)
        elif start_after and name[:64] <= start_after:
            continue
        elif TMP_SUFFIX_RE.search(name) and _is_regular(entry):
            yield WalkEntry(EntryKind.TEMP, path, subdir=sub)
        elif _is_regular(entry) or (_is_dir(entry) and m is None):
            # A regular file or a directory not named like a block: not ours.
            yield WalkEntry(EntryKind.OTHER, path, subdir=sub)
        else:
            yield WalkEntry(EntryKind.NOT_A_FILE, path, error=_what(entry), subdir=sub)


def iter_block_files(
    root: Path | str, start_after: str = "", *, stat: bool = True, disk: Disk | None = None
) -> Iterator[BlockLocation]:
    """Every block file under a data directory (ours or Garage's), in hash order, on
    ``disk`` (None: the real one)."""
    if disk is None:
        disk = RealDisk()
    for entry in walk_data_dir(disk, root, start_after, stat=stat, top_level=False):
        if entry.loc is not None:
            yield entry.loc


__all__ = ["EntryKind", "WalkEntry", "iter_block_files", "walk_data_dir"]
