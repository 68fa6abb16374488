"""Removing temp files left by a crash (``*.tmp<8 hex>``, ``trioblock-marker.tmp<8 hex>``).

Rules kept here:

- Only regular files with a temp name are removed, by name relative to their directory's
  handle on the node's ``Disk`` (never through a link), and never one in ``LiveTemps`` (a write in
  progress: its name is registered before the file is created and until it is renamed
  or removed, so a sweep that lists it always finds it registered).
- A directory that cannot be listed is logged and skipped; the sweep goes on.
- The walk is consumed in bounded steps (``limit`` entries per call), so a background
  sweep can go through millions of files a worker-thread trip at a time.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Iterator
from itertools import islice

import trio

from .._core.datalayout import DataLayout
from .._core.disk import Disk
from .dirwalk import EntryKind, WalkEntry, walk_data_dir
from .durable import LiveTemps
from .fileops import regular_at
from .threads import run_blocking

log = logging.getLogger("trioblock.storage")

#: Entries of the tree looked at per worker-thread trip of the background temp sweep.
SWEEP_BATCH = 512


def remove_temp(disk: Disk, entry: WalkEntry, live: LiveTemps) -> bool:
    """Remove the stale temp file ``entry``; False when live, gone or not removable."""
    head, _, name = entry.path.rpartition("/")
    if name in live:
        return False
    try:
        if entry.subdir:
            with regular_at(disk, entry.path) as found:
                if found is None:
                    return False
                disk.unlink_at(*found)
        else:  # at the top of the data directory
            root = disk.open_dir(head)
            try:
                disk.unlink_at(root, name)
            finally:
                disk.close(root)
    except FileNotFoundError:
        return False
    except OSError as exc:
        if exc.errno != errno.EROFS:
            log.warning("could not remove stale temp file %s: %s", entry.path, exc)
        return False
    return True


def sweep_entries(
    disk: Disk, entries: Iterator[WalkEntry], live: LiveTemps, limit: int | None = None
) -> tuple[int, bool]:
    """Remove the stale temp files among the next ``limit`` entries (all when None).

    Returns ``(removed, more)``: ``more`` when ``limit`` entries were taken.
    """
    removed = taken = 0
    for entry in entries if limit is None else islice(entries, limit):
        taken += 1
        if entry.kind is EntryKind.UNREADABLE:
            log.warning("temp sweep: cannot list %s: %s", entry.path, entry.error)
        elif entry.kind is EntryKind.TEMP and remove_temp(disk, entry, live):
            removed += 1
    return removed, limit is not None and taken == limit


def sweep_all_sync(disk: Disk, layout: DataLayout, live: LiveTemps) -> int:
    """Remove the stale temp files of every writable data directory in one pass."""
    removed = 0
    for root in layout.dirs:
        if not layout.is_read_only(root):
            removed += sweep_entries(disk, walk_data_dir(disk, root, stat=False), live)[0]
    return removed


async def sweep_all(
    disk: Disk, layout: DataLayout, live: LiveTemps, limiter: trio.CapacityLimiter
) -> int:
    """The same, :data:`SWEEP_BATCH` entries per worker-thread trip."""
    removed = 0
    for root in layout.dirs:
        if layout.is_read_only(root):
            continue
        entries = walk_data_dir(disk, root, stat=False)
        more = True
        while more:
            n, more = await run_blocking(
                sweep_entries, disk, entries, live, SWEEP_BATCH, limiter=limiter
            )
            removed += n
    return removed


__all__ = ["SWEEP_BATCH", "remove_temp", "sweep_all", "sweep_all_sync", "sweep_entries"]
