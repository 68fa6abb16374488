"""Operator work of a node: the scrub, repair and rebalance entry points and their state.

:class:`Operations` starts the scrub worker when the node opens (it then runs for the
node's lifetime, and its progress is saved when the node stops), runs repairs and
rebalances on demand, and keeps what an operator asks about them:

- ``scrub(cmd, seconds)`` / ``scrub_status()``;
- ``repair()`` / ``rebalance()`` run the worker and wait for its report; a second call
  while one runs waits for the same run. Cancelling a caller does not stop the worker;
  closing the node does (the caller then gets ``NodeClosedError``);
- ``start(name)`` starts a repair or rebalance without waiting, and ``status(name)``
  reports it (:class:`OperationStatus`: state, progress, report or error), so a client
  can draw a progress bar by polling.
"""

from __future__ import annotations

import enum
import logging
import random
from dataclasses import dataclass
from typing import Literal, TypeVar

import trio
from trio_util import move_on_when

from ..errors import NodeClosedError
from .background.rebalance import DEFAULT_REBALANCE_TRANQUILITY, RebalanceReport, RebalanceWorker
from .background.repair import DEFAULT_REPAIR_TRANQUILITY, RepairReport, RepairWorker
from .background.scrub import ScrubWorker
from .background.scrubstate import ScrubStatus
from .background.workers import WorkerRegistry
from .context import NodeContext
from .recount import DEFAULT_RECOUNT_TRANQUILITY, RecountReport, RecountWorker

log = logging.getLogger("trioblock.operations")

R = TypeVar("R")

OperationName = Literal["repair", "rebalance", "refcounts"]
OPERATION_NAMES: tuple[OperationName, ...] = ("repair", "rebalance", "refcounts")
_Workers = RepairWorker | RebalanceWorker | RecountWorker


class OperationState(enum.StrEnum):
    """Where a repair or a rebalance is."""

    IDLE = "idle"  # never started since the node opened
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True)
class OperationStatus:
    """A repair or rebalance as ``BlockManager.operation_status()`` reports it.

    ``progress`` is 0..1 while running, 1.0 once done; ``report`` is the
    :class:`RepairReport` / :class:`RebalanceReport` once done; ``error`` says why it
    failed. Times are node msec.
    """

    name: str
    state: OperationState
    progress: float | None
    info: str | None
    started_at: int | None
    finished_at: int | None
    report: RepairReport | RebalanceReport | RecountReport | None
    error: str | None


@dataclass
class _Run:
    worker: _Workers
    started_at: int
    finished_at: int | None = None
    error: str | None = None


class Operations:
    """Scrub, repair and rebalance of one node."""

    def __init__(
        self, ctx: NodeContext, workers: WorkerRegistry, *, rng: random.Random | None = None
    ) -> None:
        self._ctx = ctx
        self._workers = workers
        self._scrub = ScrubWorker(ctx, rng=rng)
        self._runs: dict[str, _Run] = {}

    def start_scrub_worker(self, nursery: trio.Nursery) -> None:
        """Run the scrub worker, and save its progress when the node stops."""
        self._workers.add(nursery, self._scrub)
        nursery.start_soon(self._save_scrub_on_stop)

    async def _save_scrub_on_stop(self) -> None:
        await self._ctx.stopping.wait()
        # Shielded: the nursery is cancelled right after the workers stop, and this
        # must still run (it waits at most for the scrub's current unit).
        with trio.CancelScope(shield=True):
            await self._scrub.checkpoint()

    # -- scrub ----------------------------------------------------------------------------

    async def scrub(self, cmd: str | int, seconds: float | None = None) -> ScrubStatus:
        await self._scrub.command(cmd, seconds)
        return self._scrub.status()

    def scrub_status(self) -> ScrubStatus:
        return self._scrub.status()

    async def wait_scrub_runs(self, n: int) -> None:
        """Wait until ``n`` scrub runs have completed since the node opened;
        ``NodeClosedError`` if the node closes first."""
        async with move_on_when(self._ctx.stopping.wait) as closing:
            await self._scrub.runs.wait_value(lambda v: v >= n)
        if closing.cancelled_caught:
            raise NodeClosedError(self._ctx.node_id)

    # -- repair and rebalance ---------------------------------------------------------------

    def start(self, name: OperationName, *, tranquility: int | None = None) -> _Workers:
        """Start ``name`` unless it runs already; return its worker."""
        ctx = self._ctx
        nursery = ctx.require_open()
        run = self._runs.get(name)
        # A run whose worker has finished is over, even before ``_watch`` has recorded
        # it: a call right after it starts a new run rather than returning its report.
        if run is not None and run.finished_at is None and not run.worker.finished.is_set():
            return run.worker
        worker: _Workers
        if name == "repair":
            worker = RepairWorker(
                ctx, tranquility=DEFAULT_REPAIR_TRANQUILITY if tranquility is None else tranquility
            )
        elif name == "rebalance":
            worker = RebalanceWorker(
                ctx,
                tranquility=DEFAULT_REBALANCE_TRANQUILITY if tranquility is None else tranquility,
            )
        elif name == "refcounts":
            worker = RecountWorker(
                ctx, tranquility=DEFAULT_RECOUNT_TRANQUILITY if tranquility is None else tranquility
            )
        else:
            raise ValueError(f"unknown operation {name!r}: repair, rebalance or refcounts")
        run = _Run(worker, started_at=ctx.clock.now_msec())
        self._runs[name] = run
        self._workers.add(nursery, worker)
        nursery.start_soon(self._watch, name, run)
        log.info("%s: %s started", ctx.node_id, name)
        return worker

    async def _watch(self, name: str, run: _Run) -> None:
        """Record the end of a run: its report, or why it stopped without one."""
        async with move_on_when(self._ctx.stopping.wait):
            await run.worker.finished.wait()
        if run.worker.report is None:
            run.error = f"the node closed before the {name} finished"
        run.finished_at = self._ctx.clock.now_msec()

    async def run(self, name: OperationName, kind: type[R], *, tranquility: int | None = None) -> R:
        """Start (or join) ``name`` and wait for its report, a ``kind``."""
        worker = self.start(name, tranquility=tranquility)
        async with move_on_when(self._ctx.stopping.wait):
            await worker.finished.wait()
        report = worker.report
        if report is None:
            raise NodeClosedError(self._ctx.node_id)
        if not isinstance(report, kind):
            raise TypeError(
                f"operation {name!r} reported a {type(report).__name__}, not a {kind.__name__}"
            )
        return report

    def status(self, name: str) -> OperationStatus:
        if name not in OPERATION_NAMES:
            raise ValueError(f"unknown operation {name!r}: repair, rebalance or refcounts")
        run = self._runs.get(name)
        if run is None:
            return OperationStatus(name, OperationState.IDLE, None, None, None, None, None, None)
        worker = run.worker
        info = worker.info()
        if run.finished_at is None:
            state, progress = OperationState.RUNNING, info.progress
        elif worker.report is not None:
            state, progress = OperationState.DONE, 1.0
        else:
            state, progress = OperationState.FAILED, None
        error = run.error
        if error is None and state is not OperationState.DONE and worker.last_error:
            error = worker.last_error
        return OperationStatus(
            name=name,
            state=state,
            progress=progress,
            info=info.info,
            started_at=run.started_at,
            finished_at=run.finished_at,
            report=worker.report,
            error=error if state is OperationState.FAILED else None,
        )


__all__ = [
    "OPERATION_NAMES",
    "OperationName",
    "OperationState",
    "OperationStatus",
    "Operations",
]
