"""The block manager's members for upkeep: the resync queue and workers, scrub, repair and
rebalance."""

from __future__ import annotations

from .._storage import ResyncErrorInfo
from .background.rebalance import RebalanceReport
from .background.repair import RepairReport
from .background.scrubstate import ScrubStatus
from .context import as_hash
from .localcounts import QueuedResync
from .manager_base import ManagerBase
from .operations import OperationName, OperationStatus


class UpkeepMembers(ManagerBase):
    """The resync and operation members of :class:`BlockManager`."""

    # -- resync -------------------------------------------------------------------------------

    def resync_queue_len(self) -> int:
        """Entries in the resync queue (pending checks, due or not)."""
        return self._local().ctx.db.resync_queue_len()

    def resync_errors_len(self) -> int:
        """Blocks whose last resync failed (see :meth:`list_resync_errors`)."""
        return self._local().ctx.db.resync_errors_len()

    def list_resync_errors(self) -> list[ResyncErrorInfo]:
        """Blocks whose resync failed, with their back-off state."""
        return self._local().refs.list_resync_errors()

    def list_resync_queue(self, limit: int = 1000) -> list[QueuedResync]:
        """The first ``limit`` entries of the resync queue, earliest first."""
        return self._local().refs.list_resync_queue(limit)

    def retry_now(self, hash: bytes) -> bool:
        """Clear the back-off of an errored block and queue it for now.

        Returns whether the block had a resync error.
        """
        h = as_hash(hash)
        return self._local().refs.retry_now(h)

    def retry_all_now(self) -> int:
        """:meth:`retry_now` for every errored block; returns how many were queued."""
        return self._local().refs.retry_all_now()

    def purge(self, hash: bytes) -> int:
        """Forget an unrecoverable block: its refcount, error, queue entries and local copy.

        The local copy vanishes from lookups before this returns (its file is unlinked
        in the background). Returns the number of local copies removed.
        """
        h = as_hash(hash)
        return self._local().refs.purge(h)

    @property
    def resync_workers(self) -> int:
        """The resync workers always running (see :meth:`set_resync_workers`)."""
        return self._local().resync.n_workers

    @property
    def resync_tranquility(self) -> int:
        """The resync tranquility (see :meth:`set_resync_tranquility`)."""
        return self._local().resync.tranquility

    def set_resync_workers(self, n: int) -> int:
        """Run at least ``n`` (1..8) resync workers from now on; persisted across restarts.

        ``n`` is the pool's floor: while checks wait more than a second past their
        time, the node adds workers (up to 8) and lets them go after ten seconds with
        nothing due. Returns ``n``.
        """
        return self._local().resync.set_workers(n)

    def set_resync_tranquility(self, tranquility: int) -> int:
        """Sleep ``tranquility`` × the mean step time between resync steps; persisted.

        Returns ``tranquility``.
        """
        return self._local().resync.set_tranquility(tranquility)

    # -- operations ---------------------------------------------------------------------------

    async def scrub(self, cmd: str | int, seconds: float | None = None) -> ScrubStatus:
        """Control the scrub: ``"start"``, ``"pause"`` (for ``seconds``, default one
        day), ``"resume"``, ``"cancel"``, or an int tranquility (persisted).

        Returns the status after the command. ``ValueError`` for an unknown command.
        """
        return await self._local().operations.scrub(cmd, seconds)

    def scrub_status(self) -> ScrubStatus:
        """State, progress 0..1, last completion, next automatic run, corruptions found."""
        return self._local().operations.scrub_status()

    async def wait_scrub_runs(self, n: int = 1) -> None:
        """Wait until ``n`` scrub runs have completed since the node opened.

        ``NodeClosedError`` if the node closes first.
        """
        await self._local().operations.wait_scrub_runs(n)

    async def repair(self, *, tranquility: int | None = None) -> RepairReport:
        """Queue every block known to the rc table or found on disk for resync (now).

        Returns once everything is queued; the resync workers do the rest. A second
        call while one runs waits for the same repair.
        """
        return await self._local().operations.run("repair", RepairReport, tranquility=tranquility)

    async def rebalance(self, *, tranquility: int | None = None) -> RebalanceReport:
        """Move every block to its primary directory; then forget the secondaries."""
        operations = self._local().operations
        return await operations.run("rebalance", RebalanceReport, tranquility=tranquility)

    def start_operation(self, name: OperationName) -> OperationStatus:
        """Start ``"repair"``, ``"rebalance"`` or ``"refcounts"`` (:meth:`repair_refcounts`)
        without waiting (or join the one running).

        Returns its status; follow it with :meth:`operation_status`.
        """
        self._local().operations.start(name)
        return self._local().operations.status(name)

    def operation_status(self, name: str) -> OperationStatus:
        """Where the last ``"repair"`` or ``"rebalance"`` started since opening is."""
        return self._local().operations.status(name)


__all__ = ["UpkeepMembers"]
