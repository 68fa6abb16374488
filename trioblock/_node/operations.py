"""Operator actions of a node: scrub, repair and rebalance (a mixin of ``BlockManager``).

``BlockManager`` inherits :class:`OperationsMixin` and calls ``_start_operations()``
once its nursery is open; that starts the scrub worker (which then runs for the node's
lifetime) and a small task saving the scrub's progress when the node stops.

- ``await bm.scrub(cmd, seconds=None) -> ScrubStatus`` — ``"start"``, ``"pause"`` (for
  ``seconds``, default a day), ``"resume"``, ``"cancel"`` or an int tranquility;
  returns the status once the command is applied (and persisted).
- ``bm.scrub_status() -> ScrubStatus``.
- ``await bm.repair() -> RepairReport`` — runs the repair worker and returns once every
  block of the rc table and of every data directory is queued for resync (not once the
  resync is over). A second call while one runs waits for the same repair.
- ``await bm.rebalance() -> RebalanceReport`` — runs the rebalance worker and returns
  when every block is in its primary directory (and the layout has lost its
  secondaries). A second call while one runs waits for the same rebalance.

Cancelling a caller of ``repair``/``rebalance`` does not stop the worker; closing the
node does (the caller then gets ``RuntimeError``).

:func:`attach` wires the mixin into a node whose class does not inherit it yet (for
tests written before the wiring); it is a no-op on a wired node.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, TypeVar

import trio

from .rebalance import DEFAULT_REBALANCE_TRANQUILITY, RebalanceReport, RebalanceWorker
from .repair import DEFAULT_REPAIR_TRANQUILITY, RepairReport, RepairWorker
from .scrub import OperationsNode, ScrubStatus, ScrubWorker

if TYPE_CHECKING:
    from .._core.config import Config
    from .._storage.blockfiles import BlockStore
    from .._storage.metadata import MetadataDb
    from .clock import NodeClock
    from .metrics import Metrics
    from .resync import ResyncShared
    from .workers import Worker

W = TypeVar("W", RepairWorker, RebalanceWorker)


class OperationsMixin:
    """Scrub, repair and rebalance entry points; mixed into ``BlockManager``."""

    if TYPE_CHECKING:
        # Provided by BlockManager.
        config: Config
        db: MetadataDb
        store: BlockStore
        clock: NodeClock
        metrics: Metrics
        db_limiter: trio.CapacityLimiter
        resync: ResyncShared
        _nursery: trio.Nursery | None
        _stopping: trio.Event

        def put_to_resync(self, hash: bytes, delay_msec: int = 0) -> None: ...

        def add_worker(self, worker: Worker) -> None: ...

    #: Random source of the automatic scrub's jitter; set before start to make it
    #: reproducible (``None``: a fresh ``random.Random()``).
    scrub_rng: random.Random | None = None
    _scrub_worker: ScrubWorker | None = None
    _repair_worker: RepairWorker | None = None
    _rebalance_worker: RebalanceWorker | None = None

    def _ops_node(self) -> OperationsNode:
        return self

    # -- lifecycle ----------------------------------------------------------------------------

    def _start_operations(self) -> None:
        """Start the scrub worker; call once the node's nursery is open (idempotent)."""
        if self._scrub_worker is not None:
            return
        worker = ScrubWorker(self._ops_node(), rng=self.scrub_rng)
        self._scrub_worker = worker
        self.add_worker(worker)
        assert self._nursery is not None
        self._nursery.start_soon(self._save_scrub_on_stop, worker)

    async def _save_scrub_on_stop(self, worker: ScrubWorker) -> None:
        await self._stopping.wait()
        # Shielded: the nursery is cancelled right after the workers stop, and this
        # must still run (it waits at most for the scrub's current block).
        with trio.CancelScope(shield=True):
            await worker.checkpoint()

    def _require_scrub(self) -> ScrubWorker:
        if self._scrub_worker is None:
            raise RuntimeError("this node's operations are not started")
        return self._scrub_worker

    # -- scrub ----------------------------------------------------------------------------------

    async def scrub(self, cmd: str | int, seconds: float | None = None) -> ScrubStatus:
        """Control the scrub: ``"start"``, ``"pause"`` (for ``seconds``, default one
        day), ``"resume"``, ``"cancel"``, or an int tranquility (persisted).

        Returns the status after the command. ``ValueError`` for an unknown command.
        """
        worker = self._require_scrub()
        await worker.command(cmd, seconds)
        return worker.status()

    def scrub_status(self) -> ScrubStatus:
        """State, progress 0..1, last completion, next automatic run, corruptions found."""
        return self._require_scrub().status()

    # -- repair and rebalance ---------------------------------------------------------------

    async def _run_to_end(self, worker: W) -> W:
        if self._stopping.is_set():
            raise RuntimeError("this BlockManager is closed")
        if worker.report is None:
            async with trio.open_nursery() as nursery:

                async def stop_on_close() -> None:
                    await self._stopping.wait()
                    nursery.cancel_scope.cancel()

                nursery.start_soon(stop_on_close)
                await worker.finished.wait()
                nursery.cancel_scope.cancel()
        if worker.report is None:
            raise RuntimeError(f"the node closed before the {worker.name} finished")
        return worker

    async def repair(self, *, tranquility: int = DEFAULT_REPAIR_TRANQUILITY) -> RepairReport:
        """Queue every block known to the rc table or found on disk for resync (now).

        Returns once everything is queued; the resync workers do the rest.
        """
        worker = self._repair_worker
        if worker is None or worker.report is not None:
            worker = RepairWorker(self._ops_node(), tranquility=tranquility)
            self._repair_worker = worker
            self.add_worker(worker)
        report = (await self._run_to_end(worker)).report
        assert report is not None
        return report

    async def rebalance(
        self, *, tranquility: int = DEFAULT_REBALANCE_TRANQUILITY
    ) -> RebalanceReport:
        """Move every block to its primary directory; then forget the secondaries."""
        worker = self._rebalance_worker
        if worker is None or worker.report is not None:
            worker = RebalanceWorker(self._ops_node(), tranquility=tranquility)
            self._rebalance_worker = worker
            self.add_worker(worker)
        report = (await self._run_to_end(worker)).report
        assert report is not None
        return report


_wired: dict[type, type] = {}


def attach(bm: object) -> OperationsMixin:
    """Give a running node the operations, if its class does not have them yet.

    On a ``BlockManager`` that inherits :class:`OperationsMixin` and started its
    operations this does nothing; otherwise it switches the instance to a subclass with
    the mixin and starts the scrub worker.
    """
    if not isinstance(bm, OperationsMixin):
        cls = type(bm)
        wired = _wired.get(cls)
        if wired is None:
            wired = type(cls.__name__, (cls, OperationsMixin), {})
            _wired[cls] = wired
        bm.__class__ = wired
    assert isinstance(bm, OperationsMixin)
    bm._start_operations()
    return bm


__all__ = [
    "OperationsMixin",
    "RebalanceReport",
    "RepairReport",
    "ScrubStatus",
    "attach",
]
