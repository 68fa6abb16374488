"""The resync workers: 1..8 tasks draining the ``resync_queue`` together.

Each unit takes the earliest queue entry that no other resync worker is handling (a
shared busy set), and:

- if its time has not come, idles until then or until the queue changes;
- if the block's error counter says "not yet", moves the entry to the counter's next
  try and goes on;
- otherwise asks the node to resync the block: success clears the error counter and
  the entry; failure bumps the counter and requeues at the back-off time; a deferral
  requeues at the time the node asked for.

Every reschedule writes the new entry before removing the old one (see metadata.py).
"""

from __future__ import annotations

import logging
from typing import Protocol

import trio
from trio_util import AsyncValue

from .._core.hashing import Hash
from .._core.refcount import parse_queue_key
from .._core.tranquilizer import Tranquilizer
from .._storage.metadata import MetadataDb
from .clock import NodeClock
from .metrics import Metrics
from .workers import StepResult, Throttled, Worker, WorkerInfo, WorkerState, with_details

log = logging.getLogger("trioblock.resync")

#: Upper bound on an idle wait, a safety net should a notification ever be missed
#: (every queue change notifies; long enough not to cost anything in virtual time).
MAX_IDLE = 600.0


class ResyncShared:
    """State the resync workers share: busy set, settings, queue notifications."""

    def __init__(self, workers: int, tranquility: int) -> None:
        self.busy: set[Hash] = set()
        self.n_workers = workers
        self.tranquility = tranquility
        #: bumped on every queue change; a worker idles until it moves past its token
        self.generation = AsyncValue(0)

    def notify(self) -> None:
        self.generation.value += 1


class ResyncTarget(Protocol):
    """What a resync worker needs from the node."""

    db: MetadataDb
    clock: NodeClock
    metrics: Metrics
    db_limiter: trio.CapacityLimiter

    @property
    def resync_retry_delay_msec(self) -> int: ...

    async def resync_block(self, hash: Hash) -> int | None:
        """Bring one block in order; return a time (msec) to look again, or None."""
        ...


class ResyncWorker(Worker):
    def __init__(self, index: int, node: ResyncTarget, shared: ResyncShared) -> None:
        super().__init__()
        self.index = index
        self.name = f"resync-{index}"
        self.node = node
        self.shared = shared
        self.tranquilizer = Tranquilizer()
        self._token = 0
        self._wake_at: float | None = None

    async def work(self) -> StepResult:
        if self.index >= self.shared.n_workers:
            return WorkerState.DONE
        shared, node = self.shared, self.node
        self._token = shared.generation.value
        self._wake_at = None
        head = await node.db.queue_head(len(shared.busy) + 1)
        entry = next(((k, h) for k, h in head if h not in shared.busy), None)
        if entry is None:
            return WorkerState.IDLE
        key, hash = entry
        when, _ = parse_queue_key(key)
        now = node.clock.now_msec()
        if when > now:
            self._wake_at = node.clock.trio_time_of(when)
            return WorkerState.IDLE
        shared.busy.add(hash)
        try:
            return await self._handle(key, hash, now)
        finally:
            shared.busy.discard(hash)

    async def _handle(self, key: bytes, hash: Hash, now: int) -> StepResult:
        node = self.node
        delay = node.resync_retry_delay_msec
        counter = node.db.get_error(hash)
        if counter is not None and now < counter.next_try(delay):
            await node.db.queue_move(key, hash, counter.next_try(delay))
            return WorkerState.BUSY
        started = trio.current_time()
        try:
            retry_at = await node.resync_block(hash)
        except Exception as exc:
            node.metrics.resync_errors += 1
            counter = await node.db.resync_failed(key, hash, node.clock.now_msec(), delay)
            log.warning(
                "resync of %s failed (%d in a row, next try in %.0fs): %s",
                hash.short(),
                counter.errors,
                counter.delay_msec(delay) / 1000,
                exc,
            )
        else:
            if retry_at is not None:
                await node.db.queue_move(key, hash, retry_at)
            else:
                await node.db.resync_succeeded(key, hash)
        finally:
            # Node-clock durations: real time normally, virtual time under a MockClock
            # (where inline disk work takes none, keeping simulations deterministic).
            elapsed = trio.current_time() - started
            node.metrics.resyncs += 1
            node.metrics.resync_duration.observe(elapsed)
            self.tranquilizer.record(elapsed)
        return Throttled(self.tranquilizer.delay(self.shared.tranquility))

    async def wait_for_work(self) -> None:
        token = self._token
        deadline = trio.current_time() + MAX_IDLE
        if self._wake_at is not None:
            deadline = min(deadline, self._wake_at)
        with trio.move_on_at(deadline):
            await self.shared.generation.wait_value(lambda v: v > token)

    def info(self) -> WorkerInfo:
        db = self.node.db
        queue_length = None if db.closed else db.resync_queue_len()
        return with_details(
            super().info(), queue_length=queue_length, tranquility=self.shared.tranquility
        )
