"""The block manager's members for operators' inspection and maintenance: block info,
stats, the reference recount and metadata snapshots (the work is in ``blockinfo``,
``stats``, ``recount`` and ``metasnap``)."""

from __future__ import annotations

from .blockinfo import BlockInfo, cluster_block_info, local_block_info
from .context import as_hash
from .manager_base import ManagerBase
from .metasnap import SnapshotInfo
from .recount import RecountReport
from .stats import ClusterStats, NodeStats, cluster_stats, local_node_stats


class OperatorMembers(ManagerBase):
    """The inspection and maintenance members of :class:`BlockManager`."""

    async def block_info(self, hash: bytes) -> BlockInfo:
        """Everything this node holds about a block (async): count and state,
        references, local copies, storage nodes, resync queue entries and error."""
        h = as_hash(hash)
        return await local_block_info(self._local().ctx, h)

    async def cluster_block_info(self, hash: bytes) -> dict[str, BlockInfo | str]:
        """:meth:`block_info` of every storage node of the block (any live layout
        version), asked at once; a node that could not be asked maps to the reason."""
        h = as_hash(hash)
        self._open()
        local = None if self._storage is None else self._storage.ctx
        return await cluster_block_info(self._ctx, local, h)

    async def repair_refcounts(self, *, tranquility: int | None = None) -> RecountReport:
        """Recompute every count that references determine (async): each block with
        ``block_ref`` rows gets its alive rows as its count, fixed one transaction per
        batch; returns what changed. Blocks without rows (local ``incref``) keep theirs.
        A second call while one runs waits for the same recount."""
        self._open()
        operations = self._local().operations
        return await operations.run("refcounts", RecountReport, tranquility=tranquility)

    async def node_stats(self) -> NodeStats:
        """This node's blocks, bytes, references, queue, errors and free space (async)."""
        return await local_node_stats(self._local().ctx)

    async def cluster_stats(self) -> ClusterStats:
        """Every live node's :class:`NodeStats` and the cluster's usable capacity given
        the replication factor (async); works from any node, a gateway too."""
        self._open()
        local = None if self._storage is None else self._storage.ctx
        return await cluster_stats(self._ctx, local)

    async def snapshot_metadata(self) -> SnapshotInfo:
        """Take a consistent snapshot of this node's metadata database now (async),
        into ``metadata_dir/snapshots`` (the newest ``metadata_snapshots_kept`` stay)."""
        return await self._local().snapshots.take()

    async def metadata_snapshots(self) -> list[SnapshotInfo]:
        """This node's metadata snapshots, oldest first (async)."""
        return await self._local().snapshots.list()


__all__ = ["OperatorMembers"]
