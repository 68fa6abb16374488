"""The scrub worker: read and verify every block of every data directory, now and then.

Rules kept here:

- A scrub walks the data directories in their layout order and each one in hash order
  (``walk_data_dir``, never following a link), reading and verifying every block file in
  a worker thread (plaintext hash, for plain and compressed copies alike). A copy that fails is
  quarantined (``*.corrupted``; re-verified under the block's lock first, so a copy
  being replaced concurrently is not blamed) and queued for an immediate resync, which
  fetches a good copy from the other storage nodes. A corrupt copy in a read-only
  directory is counted and queued but left in place (read-only means never modified).
- One unit of work verifies one block; after it the worker sleeps ``tranquility ×`` the
  mean duration of the last 30 units (``Tranquilizer``). Durations are measured on the
  real clock (``time.perf_counter``): they are the disk's time, and under a
  ``MockClock`` blocking work runs inline in zero virtual time, which would make every
  tranquility sleep zero.
- Progress is checkpointed in the ``settings`` table (key ``scrub_state``, a CBOR map)
  every ``CHECKPOINT_BLOCKS`` blocks or ``CHECKPOINT_SECONDS`` seconds, on every command
  and on corruption; the node also saves it when it stops. A restart resumes after the
  last hash checkpointed: at most the blocks of one checkpoint interval are verified
  twice after a crash, none after a clean stop.
- Automatic runs start ``scrub_interval`` plus a random jitter after the previous
  completion (after the node's first start for a new node). The jitter is uniform in
  0..min(10 days, 0.4 × scrub_interval): with the default 25 days that is Garage's
  "plus 0–10 days"; a short interval gets a proportionally short jitter. No automatic
  run with ``disable_scrub``; commands work regardless.
- Commands (``ScrubWorker.command``): ``start`` (a new run, unless one is running or
  paused), ``pause`` (for some seconds; the run continues afterwards), ``resume``,
  ``cancel`` (abandon the run: it does not count as completed), or an int tranquility.
  A command waits for the current unit (one block) to finish, so it never races one.

The resumable walk over all directories (``BlockWalk``) lives in ``blockwalk.py``,
shared with the repair and rebalance workers.
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import replace

import trio
from trio_util import AsyncValue

from ..._core.config import DAY
from ..._core.tranquilizer import Tranquilizer
from ..._storage import BlockLocation, run_blocking
from .blockwalk import BlockWalk, OperationsNode, hash_position
from .scrubstate import ScrubRecord, ScrubState, ScrubStatus
from .workers import StepResult, Throttled, Worker, WorkerInfo, WorkerState

log = logging.getLogger("trioblock.scrub")

SCRUB_STATE_KEY = "scrub_state"
#: Upper bound of the random delay added to ``scrub_interval``.
JITTER_MAX = 10 * DAY
#: ... and its bound relative to ``scrub_interval``.
JITTER_FRACTION = 0.4
CHECKPOINT_BLOCKS = 256
CHECKPOINT_SECONDS = 10.0
#: Blocks verified per unit (one worker-thread trip); a command waits at most this long.
VERIFY_BATCH = 64
#: ``pause`` without a duration pauses for a day.
DEFAULT_PAUSE = DAY
MAX_TRANQUILITY = 1000


class ScrubWorker(Worker):
    """The node's one scrub worker (see the module docstring)."""

    name = "scrub"

    def __init__(self, node: OperationsNode, *, rng: random.Random | None = None) -> None:
        super().__init__()
        self.node = node
        self.rng = rng if rng is not None else random.Random()
        #: held by a unit of work and by a command, so they never interleave
        self.lock = trio.Lock()
        self.tranquilizer = Tranquilizer()
        self._changed = AsyncValue(0)
        #: number of runs completed since the node opened (await ``runs.wait_value``)
        self.runs = AsyncValue(0)
        self._token = 0
        self._wake_at: float | None = None
        self._walk: BlockWalk | None = None
        self._unsaved = 0
        self._saved_at = trio.current_time()
        self.persisted = self._load()

    # -- persistence ------------------------------------------------------------------------

    def _load(self) -> ScrubRecord:
        raw = self.node.db.get_setting(SCRUB_STATE_KEY)
        if raw is not None:
            try:
                return ScrubRecord.decode(raw)
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                log.warning("stored scrub state is unreadable, starting afresh: %r", exc)
        state = ScrubRecord(
            status=ScrubState.IDLE,
            next_run=self._next_run_after(self.node.clock.now_msec()),
            tranquility=self.node.config.scrub_tranquility,
        )
        self.node.db.set_setting(SCRUB_STATE_KEY, state.encode())
        return state

    async def _save(self) -> None:
        self._sync_position()
        await self.node.db.save_setting(SCRUB_STATE_KEY, self.persisted.encode())
        self._unsaved = 0
        self._saved_at = trio.current_time()

    async def checkpoint(self) -> None:
        """Save the progress now (waits for the current unit); used when the node stops."""
        async with self.lock:
            if not self.node.db.closed:
                await self._save()

    def _sync_position(self) -> None:
        walk, st = self._walk, self.persisted
        if walk is not None and st.status.in_progress:
            st.dir_index = walk.dir_index
            st.after = walk.after
            current = walk.current_dir
            st.dir_path = None if current is None else str(current)

    def _next_run_after(self, msec: int) -> int:
        interval = self.node.config.scrub_interval
        jitter = self.rng.uniform(0.0, min(JITTER_MAX, JITTER_FRACTION * interval))
        return msec + int((interval + jitter) * 1000)

    # -- the walk -------------------------------------------------------------------------------

    def _open_walk(self) -> BlockWalk:
        st = self.persisted
        dirs = self.node.store.layout.dirs
        index, after = st.dir_index, st.after
        if st.dir_path is not None and (index >= len(dirs) or str(dirs[index]) != st.dir_path):
            # The directory list changed since the checkpoint: find ours again.
            paths = [str(d) for d in dirs]
            if st.dir_path in paths:
                index = paths.index(st.dir_path)
            else:
                log.info("scrub: directory %s is gone, restarting the walk", st.dir_path)
                index, after = 0, ""
        return BlockWalk(
            dirs,
            self.node.store.limiter,
            index,
            after,
            on_problem=lambda message: log.warning("scrub: %s", message),
            disk=self.node.store.disk,
        )

    def _begin(self, now: int) -> None:
        st = self.persisted
        st.status = ScrubState.RUNNING
        st.started_at = now
        st.paused_until = None
        st.dir_index, st.dir_path, st.after = 0, None, ""
        st.checked = 0
        self._walk = None
        log.info("scrub started")

    def _stop_run(self) -> None:
        st = self.persisted
        st.status = ScrubState.IDLE if st.last_completed is None else ScrubState.FINISHED
        st.paused_until = None
        st.dir_index, st.dir_path, st.after = 0, None, ""
        self._walk = None

    # -- the worker ---------------------------------------------------------------------------

    async def work(self) -> StepResult:
        async with self.lock:
            return await self._unit()

    async def _unit(self) -> StepResult:
        node, st = self.node, self.persisted
        self._token = self._changed.value
        self._wake_at = None
        now = node.clock.now_msec()
        if st.status is ScrubState.PAUSED:
            if st.paused_until is not None and now < st.paused_until:
                self._wake_at = node.clock.trio_time_of(st.paused_until)
                return WorkerState.IDLE
            st.status = ScrubState.RUNNING
            st.paused_until = None
            log.info("scrub resumed after its pause")
            await self._save()
        if st.status is not ScrubState.RUNNING:
            if node.config.disable_scrub:
                return WorkerState.IDLE
            if now < st.next_run:
                self._wake_at = node.clock.trio_time_of(st.next_run)
                return WorkerState.IDLE
            self._begin(now)
            await self._save()
        if self._walk is None:
            self._walk = self._open_walk()
        started = time.perf_counter()
        if await self._walk.next() is None:
            await self._complete()
            return WorkerState.BUSY
        # A batch per unit: one thread trip verifies up to VERIFY_BATCH listed blocks.
        batch = self._walk.buffered(VERIFY_BATCH)
        results = await run_blocking(
            node.store.verify_files_sync, batch, limiter=node.store.limiter
        )
        for loc, result in zip(batch, results, strict=True):
            if isinstance(result, OSError):
                # An unreadable file (EIO, EACCES...): report it and go on, or the walk
                # would retry it forever.
                self.errors += 1
                self.last_error = f"cannot read {loc.path}: {result}"
                self.last_error_at = node.clock.now_msec()
                log.error("scrub: cannot read %s: %s", loc.path, result)
            elif not result:
                await self._corrupt(loc)
            self._walk.done(loc)
            st.checked += 1
            self._unsaved += 1
        self.tranquilizer.record(time.perf_counter() - started)
        if (
            self._unsaved >= CHECKPOINT_BLOCKS
            or trio.current_time() - self._saved_at >= CHECKPOINT_SECONDS
        ):
            await self._save()
        return Throttled(self.tranquilizer.delay(st.tranquility))

    async def _corrupt(self, loc: BlockLocation) -> None:
        if not (await self.node.corrupt_copy_found(loc.hash, loc, confirm=True)).counted:
            return  # replaced or deleted meanwhile, or valid after all
        self.persisted.corruptions += 1
        log.warning("scrub: block %s is corrupt, quarantined and queued", loc.hash.hex())
        await self._save()

    async def _complete(self) -> None:
        st = self.persisted
        now = self.node.clock.now_msec()
        st.last_completed = now
        st.last_checked = st.checked
        st.next_run = self._next_run_after(now)
        self._stop_run()
        await self._save()
        self.runs.value += 1
        log.info(
            "scrub completed: %d blocks verified, %d corruptions found so far",
            st.checked,
            st.corruptions,
        )

    async def wait_for_work(self) -> None:
        token = self._token
        deadline = math.inf if self._wake_at is None else self._wake_at
        with trio.move_on_at(deadline):
            await self._changed.wait_value(lambda v: v > token)

    # -- commands -------------------------------------------------------------------------------

    async def command(self, cmd: str | int, seconds: float | None = None) -> None:
        """Apply an operator command (see the module docstring); ``ValueError`` if unknown."""
        if isinstance(cmd, bool):
            raise ValueError(f"unknown scrub command {cmd!r}")
        if isinstance(cmd, int):
            if not 0 <= cmd <= MAX_TRANQUILITY:
                raise ValueError(f"scrub tranquility must be 0..{MAX_TRANQUILITY}, got {cmd}")
        elif cmd not in ("start", "pause", "resume", "cancel"):
            raise ValueError(
                f"unknown scrub command {cmd!r}: start, pause, resume, cancel or a tranquility"
            )
        if seconds is not None and (
            isinstance(seconds, bool)
            or not isinstance(seconds, int | float)
            or not math.isfinite(seconds)
            or seconds < 0
        ):
            raise ValueError(f"pause duration must be a non-negative number, got {seconds!r}")
        async with self.lock:
            st = self.persisted
            now = self.node.clock.now_msec()
            if isinstance(cmd, int):
                st.tranquility = cmd
            elif cmd == "start":
                if not st.status.in_progress:
                    self._begin(now)
                else:
                    log.info("scrub start: a scrub is already %s", st.status)
            elif cmd == "pause":
                if not st.status.in_progress:
                    log.info("scrub pause: no scrub is running")
                else:
                    duration = DEFAULT_PAUSE if seconds is None else seconds
                    st.status = ScrubState.PAUSED
                    st.paused_until = now + int(duration * 1000)
            elif cmd == "resume":
                if st.status is ScrubState.PAUSED:
                    st.status = ScrubState.RUNNING
                    st.paused_until = None
                else:
                    log.info("scrub resume: the scrub is not paused")
            elif st.status.in_progress:  # cancel
                log.info("scrub cancelled after %d blocks", st.checked)
                self._stop_run()
            await self._save()
            self._changed.value += 1

    # -- reporting ------------------------------------------------------------------------------

    def status(self) -> ScrubStatus:
        st = self.persisted
        state = st.status
        if not state.in_progress:
            progress = 0.0 if st.last_completed is None else 1.0
            checked = st.last_checked or 0
        else:
            walk = self._walk
            if walk is not None:
                progress = walk.progress()
            else:
                n = max(1, len(self.node.store.layout.dirs))
                progress = min(1.0, (st.dir_index + hash_position(st.after)) / n)
            checked = st.checked
        return ScrubStatus(
            state=state,
            progress=progress,
            last_completed=st.last_completed,
            next_run=None if self.node.config.disable_scrub else st.next_run,
            corruptions_found=st.corruptions,
            tranquility=st.tranquility,
            paused_until=st.paused_until if st.status is ScrubState.PAUSED else None,
            blocks_checked=checked,
        )

    def info(self) -> WorkerInfo:
        status = self.status()
        return replace(
            super().info(),
            tranquility=status.tranquility,
            progress=status.progress if status.state.in_progress else None,
            info=f"{status.state}, {status.blocks_checked} blocks verified, "
            f"{status.corruptions_found} corruptions found",
        )


__all__ = [
    "SCRUB_STATE_KEY",
    "BlockWalk",
    "OperationsNode",
    "ScrubRecord",
    "ScrubState",
    "ScrubStatus",
    "ScrubWorker",
]
