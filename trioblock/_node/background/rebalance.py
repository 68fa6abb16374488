"""The rebalance worker: move blocks found outside their primary directory to it.

Rules kept here:

- Walk every data directory (``BlockWalk``); a block file whose directory is not its
  partition's primary (``store.layout.primary_dir``) is moved there, whether it sits in
  a secondary directory of the layout or is a stray.
- A move happens under the block's mutation lock, in one worker-thread call: read the
  copy (bounded, never through a link) and verify it (plaintext hash); write it into the
  primary directory with the store's one durable write (``BlockStore.place_sync``)
  keeping its mtime (the "last written" time GC relies on); only then remove the old
  copy and fsync its directory. At every instant a valid copy is visible to lookups,
  and a crash leaves at worst two copies (the next rebalance removes the extra one).
- If the primary already holds an equal or better copy (the durable write's rule:
  compressed replaces plain, nothing else replaces anything), the old copy is just
  removed.
- A copy failing verification is not moved: it is quarantined (the ``*_locked``
  variant, as the lock is held — ``trio.Lock`` is not re-entrant) and queued for an
  immediate resync.
- Read-only directories are never written: blocks found there are *copied* to their
  primary, never removed, and read-only directories stay secondary locations.
- No block is moved into a primary that is full or failing (``dirhealth``): it stays
  where it is (a lookup tries every directory) and counts as not moved.
- When the walk is over without errors, the layout loses its secondaries (read-only
  dirs excepted): it is persisted in the ``data_layout`` setting and installed in the
  store, so lookups stop probing the old directories.

``BlockManager.rebalance()`` starts the worker and waits for it to finish.
"""

from __future__ import annotations

import enum
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

import trio

from ..._core.block import decode_block
from ..._core.dirhealth import NO_SPACE, DataDirState
from ..._core.tranquilizer import Tranquilizer
from ..._storage import BlockLocation, BlockStore, Placed, run_blocking
from ...errors import CorruptBlockError
from .blockwalk import BlockWalk, OperationsNode
from .workers import StepResult, Throttled, Worker, WorkerInfo, WorkerState

log = logging.getLogger("trioblock.rebalance")

DEFAULT_REBALANCE_TRANQUILITY = 1
#: Block files looked at in one unit when none of them needs moving.
SCAN_PER_UNIT = 512
DATA_LAYOUT_KEY = "data_layout"


class MoveOutcome(enum.Enum):
    MOVED = "moved"  # written to the primary, old copy removed
    COPIED = "copied"  # written to the primary, old copy kept (read-only directory)
    DROPPED = "dropped"  # the primary had it already, old copy removed
    KEPT = "kept"  # the primary had it already, old copy kept (read-only directory)
    CORRUPT = "corrupt"  # failed verification, not moved
    GONE = "gone"  # vanished before it could be moved


@dataclass(frozen=True)
class RebalanceReport:
    """What a rebalance did. ``layout_updated``: secondaries were cleared."""

    scanned: int
    moved: int
    copied: int
    dropped: int
    corrupt: int
    errors: int
    layout_updated: bool


def move_block_sync(
    store: BlockStore, loc: BlockLocation, primary: Path, *, remove_source: bool
) -> MoveOutcome:
    """Move (or copy) the copy at ``loc`` into ``primary``; the caller holds its lock."""
    try:
        found = store.read_file_sync(loc)
    except CorruptBlockError:
        return MoveOutcome.CORRUPT
    if found is None:
        return MoveOutcome.GONE
    block, st = found
    try:
        decode_block(loc.hash, block, max_size=store.max_block_size)
    except CorruptBlockError:
        return MoveOutcome.CORRUPT
    # The one durable write: keeps an equal or better copy there (refreshing its
    # "last written" time to the newer of the two), or writes this one.
    written = store.place_sync(primary, loc.hash, block, st.st_mtime_ns) is not Placed.KEPT
    if not remove_source:
        return MoveOutcome.COPIED if written else MoveOutcome.KEPT
    store.remove_copy_sync(loc.path_str)
    return MoveOutcome.MOVED if written else MoveOutcome.DROPPED


class RebalanceWorker(Worker):
    name = "rebalance"

    def __init__(
        self, node: OperationsNode, *, tranquility: int = DEFAULT_REBALANCE_TRANQUILITY
    ) -> None:
        super().__init__()
        self.node = node
        self.tranquility = tranquility
        self.tranquilizer = Tranquilizer()
        self._walk = BlockWalk(node.store.layout.dirs, node.store.limiter, disk=node.store.disk)
        self.counts = dict.fromkeys(MoveOutcome, 0)
        self.scanned = 0
        self.move_errors = 0
        self.finished = trio.Event()
        self.report: RebalanceReport | None = None

    async def work(self) -> StepResult:
        store = self.node.store
        walk = self._walk
        for _ in range(SCAN_PER_UNIT):
            loc = await walk.next()
            if loc is None:
                await self._finish()
                return WorkerState.DONE
            walk.done(loc)
            self.scanned += 1
            root = walk.current_dir
            assert root is not None
            primary = store.layout.primary_dir(loc.hash)
            if primary == root:
                continue
            if store.health.state(str(primary)) is not DataDirState.OK:
                # Full or failing: the block stays where it is (counted as not moved,
                # so the old directories stay secondary); no line per block.
                self.move_errors += 1
                continue
            started = time.perf_counter()
            await self._move(loc, primary, remove_source=not store.layout.is_read_only(root))
            self.tranquilizer.record(time.perf_counter() - started)
            return Throttled(self.tranquilizer.delay(self.tranquility))
        return WorkerState.BUSY

    async def _move(self, loc: BlockLocation, primary: Path, *, remove_source: bool) -> None:
        node = self.node
        store = node.store
        quarantined: Path | None = None
        async with store.locks.hold(loc.hash):
            try:
                outcome = await run_blocking(
                    lambda: move_block_sync(store, loc, primary, remove_source=remove_source),
                    limiter=store.limiter,
                )
            except OSError as exc:
                if exc.errno in NO_SPACE:
                    store.health.failed(str(primary), exc)  # marked full
                    log.error("rebalance: %s is full, %s stays where it is", primary, loc.path)
                else:
                    log.warning("rebalance: could not move %s: %s", loc.path, exc)
                self.move_errors += 1
                return
        self.counts[outcome] += 1
        if outcome is MoveOutcome.CORRUPT:
            quarantined = (
                await node.corrupt_copy_found(loc.hash, loc if remove_source else None)
            ).quarantined
            log.warning(
                "rebalance: %s is corrupt, not moved%s",
                loc.path,
                f" (quarantined as {quarantined.name})" if quarantined else "",
            )

    async def _finish(self) -> None:
        node = self.node
        updated = False
        if self.move_errors == 0:
            layout = node.store.layout.with_read_only()
            if layout != node.store.layout:
                await node.db.save_setting(DATA_LAYOUT_KEY, layout.encode())
                node.store.layout = layout
                updated = True
        else:
            log.warning(
                "rebalance: %d blocks could not be moved; old directories stay secondary",
                self.move_errors,
            )
        c = self.counts
        self.report = RebalanceReport(
            scanned=self.scanned,
            moved=c[MoveOutcome.MOVED],
            copied=c[MoveOutcome.COPIED],
            dropped=c[MoveOutcome.DROPPED],
            corrupt=c[MoveOutcome.CORRUPT],
            errors=self.move_errors,
            layout_updated=updated,
        )
        log.info("rebalance done: %s", self.report)
        self.finished.set()

    def info(self) -> WorkerInfo:
        c = self.counts
        return replace(
            super().info(),
            tranquility=self.tranquility,
            progress=1.0 if self.report is not None else self._walk.progress(),
            info=f"{self.scanned} scanned, {c[MoveOutcome.MOVED]} moved, "
            f"{c[MoveOutcome.COPIED]} copied, {c[MoveOutcome.CORRUPT]} corrupt",
        )


__all__ = ["MoveOutcome", "RebalanceReport", "RebalanceWorker", "move_block_sync"]
