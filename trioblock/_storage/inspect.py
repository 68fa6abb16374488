"""Everything this node holds about one block, for an operator (``block info``).

Blocking helpers: every local copy of a block (not just the first one a read would
use), and the times of its resync queue entries.
"""

from __future__ import annotations

from collections.abc import Iterable

from .._core.block import BlockHeader
from .._core.disk import Disk
from .._core.hashing import Hash
from .database import Database
from .lookup import is_regular
from .paths import BlockLocation, block_name, subdir_names


def all_copies(disk: Disk, roots: Iterable[str], hash: Hash) -> list[tuple[str, BlockLocation]]:
    """``(directory, copy)`` for every regular file holding ``hash`` under ``roots``,
    compressed before plain in each directory (blocking)."""
    aa, bb = subdir_names(hash)
    out: list[tuple[str, BlockLocation]] = []
    for root in roots:
        for header in (BlockHeader.COMPRESSED, BlockHeader.PLAIN):
            name = block_name(hash, header)
            st = disk.lstat(root, f"{aa}/{bb}/{name}")
            if st is None:
                continue
            path = f"{root}/{aa}/{bb}/{name}"
            if is_regular(st.st_mode, path):
                out.append((root, BlockLocation(hash, path, header, st.st_size, st.st_mtime_ns)))
    return out


def queued_times(db: Database, hash: Hash) -> list[int]:
    """When the block's resync queue entries are due (node msec), earliest first."""
    rows = db.read_all("SELECT key FROM resync_queue WHERE value=? ORDER BY key", (bytes(hash),))
    return [int.from_bytes(bytes(r[0])[:8], "big") for r in rows]


__all__ = ["all_copies", "queued_times"]
