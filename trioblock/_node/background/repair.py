"""The repair worker: queue every block the node knows of for a resync check.

Rules kept here:

- Two phases: first every hash of the ``block_rc`` table (in key order, ``REPAIR_BATCH``
  at a time), then every block file of every data directory (``BlockWalk``). Each batch
  is one transaction adding queue entries, made in a worker thread.
- Every entry gets the same time, the repair's start: a block both referenced and on
  disk is therefore queued once (the queue key is ``be64(when) ‖ hash``), and the resync
  workers, notified after each batch, take the entries at once.
- The resync then does what is right for each block: fetch a referenced block that is
  missing, offload and delete an unreferenced one once its GC delay has passed.
- Tranquility-throttled like the other workers (sleep ``tranquility ×`` the mean batch
  time, measured on the real clock; see ``scrub.py`` for why).

The worker is done when everything is queued; ``BlockManager.repair()`` starts it and
waits for that (it does not wait for the resync itself).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace

import trio

from ..._core.tranquilizer import Tranquilizer
from .blockwalk import BlockWalk, OperationsNode, hash_position
from .workers import StepResult, Throttled, Worker, WorkerInfo, WorkerState

log = logging.getLogger("trioblock.repair")

REPAIR_BATCH = 256
DEFAULT_REPAIR_TRANQUILITY = 1


@dataclass(frozen=True)
class RepairReport:
    """What a repair queued: hashes from the rc table, block files found on disk."""

    rc_blocks: int
    disk_blocks: int
    queued_at: int


class RepairWorker(Worker):
    name = "repair"

    def __init__(
        self, node: OperationsNode, *, tranquility: int = DEFAULT_REPAIR_TRANQUILITY
    ) -> None:
        super().__init__()
        self.node = node
        self.tranquility = tranquility
        self.tranquilizer = Tranquilizer()
        self.when = node.clock.now_msec()
        self._rc_after = b""
        self._rc_done = False
        self._walk = BlockWalk(node.store.layout.dirs, node.store.limiter, disk=node.store.disk)
        self.rc_blocks = 0
        self.disk_blocks = 0
        #: set once everything is queued; ``report`` is then available
        self.finished = trio.Event()
        self.report: RepairReport | None = None

    async def work(self) -> StepResult:
        node = self.node
        started = time.perf_counter()
        if not self._rc_done:
            hashes = await node.db.rc_hashes(self._rc_after, REPAIR_BATCH)
            if not hashes:
                self._rc_done = True
                return WorkerState.BUSY
            self._rc_after = bytes(hashes[-1])
            self.rc_blocks += len(hashes)
            batch: list[bytes] = list(hashes)
        else:
            locations = await self._walk.take(REPAIR_BATCH)
            if not locations:
                self.report = RepairReport(self.rc_blocks, self.disk_blocks, self.when)
                self.finished.set()
                log.info(
                    "repair: queued %d referenced blocks and %d block files",
                    self.rc_blocks,
                    self.disk_blocks,
                )
                return WorkerState.DONE
            self.disk_blocks += len(locations)
            batch = [loc.hash for loc in locations]
        await node.db.queue_put_many(batch, self.when)
        node.resync.notify()
        self.tranquilizer.record(time.perf_counter() - started)
        return Throttled(self.tranquilizer.delay(self.tranquility))

    def progress(self) -> float:
        """0..1: the rc table counts as one directory more."""
        parts = 1 + len(self._walk.dirs)
        if not self._rc_done:
            return hash_position(self._rc_after.hex()) / parts
        return (1 + self._walk.progress() * len(self._walk.dirs)) / parts

    def info(self) -> WorkerInfo:
        return replace(
            super().info(),
            tranquility=self.tranquility,
            progress=1.0 if self.report is not None else self.progress(),
            info=f"queued {self.rc_blocks} referenced blocks, {self.disk_blocks} block files",
        )


__all__ = ["DEFAULT_REPAIR_TRANQUILITY", "RepairReport", "RepairWorker"]
