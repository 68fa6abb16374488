"""The resumable walk over every data directory, shared by scrub, repair and rebalance.

``BlockWalk`` goes through the data directories in their layout order and each one in
hash order (``walk_data_dir``, never following a link), a batch of entries per worker
thread trip, and can resume after a given block (the scrub's checkpoint). Entries that
are not block files but stand in a block's place (a FIFO, a link, an unreadable
directory) are handed back as *problems* for the caller to report; they are never read.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from itertools import islice
from pathlib import Path
from typing import Protocol

import trio

from ..._core.config import Config
from ..._core.disk import Disk
from ..._core.hashing import Hash
from ..._storage import (
    BlockLocation,
    BlockStore,
    EntryKind,
    MetadataDb,
    WalkEntry,
    run_blocking,
    walk_data_dir,
)
from ...errors import CorruptBlockError
from ..clock import NodeClock
from ..context import CorruptCopy, ResyncShared
from ..metrics import Metrics

log = logging.getLogger("trioblock.scrub")

#: Directory entries listed per worker-thread trip.
WALK_BATCH = 128


class OperationsNode(Protocol):
    """What the scrub, repair and rebalance workers need from the node."""

    config: Config
    db: MetadataDb
    store: BlockStore
    clock: NodeClock
    metrics: Metrics
    db_limiter: trio.CapacityLimiter
    resync: ResyncShared

    async def put_to_resync(self, hash: bytes, delay_msec: int = 0) -> None: ...

    async def corrupt_copy_found(
        self,
        hash: Hash,
        where: BlockLocation | CorruptBlockError | None = None,
        *,
        confirm: bool = False,
        resync: bool = True,
    ) -> CorruptCopy: ...


def _take(it: Iterator[WalkEntry], n: int) -> tuple[list[BlockLocation], list[WalkEntry], bool]:
    """Up to ``n`` entries of a walk: (block files, problems, more may follow)."""
    blocks: list[BlockLocation] = []
    problems: list[WalkEntry] = []
    taken = 0
    for entry in islice(it, n):
        taken += 1
        if entry.loc is not None:
            blocks.append(entry.loc)
        elif entry.kind in _PROBLEMS:
            problems.append(entry)
    return blocks, problems, taken == n


_PROBLEMS = (EntryKind.NOT_A_FILE, EntryKind.NOT_A_DIR, EntryKind.UNREADABLE)


def hash_position(hex_hash: str) -> float:
    """Where ``hex_hash`` lies in hash space, 0..1 (by its first two bytes)."""
    if not hex_hash:
        return 0.0
    return int(hex_hash[:4].ljust(4, "0"), 16) / 65536


class BlockWalk:
    """Every block file of a list of directories, in (directory, hash) order, resumable.

    The position is ``(dir_index, after)``: the walk continues in ``dirs[dir_index]``
    with the hashes greater than ``after`` (a hex string). Directory listings happen in
    worker threads, ``WALK_BATCH`` entries at a time (``walk_data_dir``, which never
    follows a link); the position only moves when the caller says a block is done, so a
    checkpoint never skips a listed but unhandled one.

    What stands in a block's place without being a block file (a FIFO, a directory, a
    link), and directories that cannot be listed, are reported to ``on_problem`` (by
    default: logged as warnings) and counted in ``problems``; they are never read.
    """

    def __init__(
        self,
        dirs: Sequence[Path],
        limiter: trio.CapacityLimiter,
        dir_index: int = 0,
        after: str = "",
        *,
        on_problem: Callable[[str], None] | None = None,
        disk: Disk,
    ) -> None:
        self.dirs = tuple(dirs)
        self.disk = disk
        self.limiter = limiter
        self.dir_index = dir_index
        self.after = after
        self.problems = 0
        self._on_problem = on_problem
        self._listing: Iterator[WalkEntry] | None = None
        self._listing_dir = -1
        self._more = True
        self._buffer: deque[BlockLocation] = deque()

    @property
    def finished(self) -> bool:
        return self.dir_index >= len(self.dirs)

    @property
    def current_dir(self) -> Path | None:
        return None if self.finished else self.dirs[self.dir_index]

    def progress(self) -> float:
        """0..1: directories done plus the hash-space position in the current one."""
        if not self.dirs:
            return 1.0
        if self.finished:
            return 1.0
        return (self.dir_index + hash_position(self.after)) / len(self.dirs)

    async def next(self) -> BlockLocation | None:
        """The next block file (None at the end); call :meth:`done` once handled."""
        while not self._buffer:
            if self.finished:
                return None
            if self._listing is None or self._listing_dir != self.dir_index:
                self._listing = walk_data_dir(
                    self.disk, self.dirs[self.dir_index], self.after, stat=False, top_level=False
                )
                self._listing_dir = self.dir_index
                self._more = True
            if self._more:
                blocks, problems, self._more = await run_blocking(
                    _take, self._listing, WALK_BATCH, limiter=self.limiter
                )
                self._buffer.extend(blocks)
                for entry in problems:
                    self._problem(entry)
            else:
                self.dir_index += 1
                self.after = ""
                self._listing = None
        return self._buffer[0]

    def _problem(self, entry: WalkEntry) -> None:
        self.problems += 1
        if entry.kind is EntryKind.UNREADABLE:
            message = f"cannot list {entry.path}: {entry.error}"
        else:
            message = f"{entry.path} is {entry.error or entry.kind.value}, not a block file"
        if self._on_problem is not None:
            self._on_problem(message)
        else:
            log.warning("%s", message)

    def buffered(self, limit: int) -> list[BlockLocation]:
        """Up to ``limit`` listed blocks, from the next one on, without listing more."""
        return list(islice(self._buffer, limit))

    def done(self, loc: BlockLocation) -> None:
        """Mark ``loc`` (the one :meth:`next` returned) as handled."""
        if self._buffer and self._buffer[0] is loc:
            self._buffer.popleft()
        hex_hash = loc.hash.hex()
        if hex_hash > self.after:
            self.after = hex_hash

    async def take(self, limit: int) -> list[BlockLocation]:
        """Up to ``limit`` block files, marked done at once; [] at the end."""
        out: list[BlockLocation] = []
        while len(out) < limit:
            loc = await self.next()
            if loc is None:
                break
            self.done(loc)
            out.append(loc)
            if not self._buffer:
                break  # one thread trip per call
        return out


# -- persisted state ---------------------------------------------------------------------


__all__ = ["WALK_BATCH", "BlockWalk", "OperationsNode", "hash_position"]
