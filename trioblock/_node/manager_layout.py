"""The block manager's members for the cluster layout: read it, change it, follow a change."""

from __future__ import annotations

from collections.abc import Mapping

from .._core.layouthistory import VersionRecord
from .._core.layoutversion import NodeRole
from .._core.placement import Layout
from .layoutstatus import LayoutStatus
from .manager_base import ManagerBase


class LayoutMembers(ManagerBase):
    """The cluster-layout members of :class:`BlockManager`."""

    # -- the cluster layout -------------------------------------------------------------------

    @property
    def layout(self) -> Layout:
        """The current cluster layout: a :class:`~trioblock.LayoutVersion` on a node with a
        layout history (opened with a ``StaticLayout`` or ``JoinCluster``), else the fixed
        layout it was opened with. Read it again after a change: it is replaced, never
        mutated."""
        return self._ctx.layout

    async def apply_layout(
        self,
        changes: Mapping[str, NodeRole | None],
        *,
        replication_factor: int | None = None,
        write_quorum: int | None = None,
    ) -> int:
        """Make the next layout version from the current one and return its number
        (async).

        ``changes`` maps node ids to their new :class:`~trioblock.NodeRole` (added or
        changed) or ``None`` (removed). The version is stored durably here, then sent to
        every node this one knows of; the others learn it from any peer too. Blocks and
        references then move to their new storage nodes in the background: watch
        :meth:`layout_status`. ``LayoutError`` (nothing stored) for an invalid change: an
        unknown node removed, a capacity of 0 or less, fewer storage nodes than the
        replication factor, a quorum out of range, or a fixed layout.

        Example::

            v = await bm.apply_layout(
                {"n3": trioblock.NodeRole(zone="dc2", capacity=2 * 2**40), "n1": None}
            )
        """
        self._open()
        return await self._membership.apply(changes, replication_factor, write_quorum)

    def layout_status(self) -> LayoutStatus:
        """Where the layout change stands, as this node knows it: the current version,
        the live ones, and each node's synced version, drained flag and what it has left
        to move (from its last report)."""
        self._open()
        return self._membership.status()

    def layout_history(self) -> list[VersionRecord]:
        """Every layout version this node has seen, oldest first: when it was applied,
        when it was retired (None while live), and whether another version with the same
        number superseded it."""
        self._open()
        return self._membership.records()

    async def forget_node(self, node_id: str) -> None:
        """Declare that ``node_id``, which no live layout version gives a role any more,
        is gone for good (its disk died), so that it counts as drained (async).

        A removed node reports itself drained once it holds nothing; a dead one never
        will, and would keep ``layout_status().settled`` false. Its references and
        copies had been written to a quorum of other nodes, which hold them. If it comes
        back after all, its own reports win again. ``LayoutError`` while it still has a
        role in a live version, or if the history does not know it.
        """
        self._open()
        await self._membership.forget(node_id)

    async def sync_layout(self) -> int:
        """Exchange layout histories with every known node now (async); the current
        version number afterwards."""
        self._open()
        await self._membership.spread_digests()
        return self._membership.status().version


__all__ = ["LayoutMembers"]
