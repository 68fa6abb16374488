"""What the block manager's members share: the node's context, its storage
collaborators, and the checks that the node is open and stores blocks.

:class:`ManagerBase` is the root of :class:`~trioblock._node.manager.BlockManager`; the
members are grouped by job in ``manager_layout`` (the cluster layout), ``manager_refs``
(reference counts and cluster references), ``manager_upkeep`` (resync and operations),
``manager_ops`` (operators' inspection and maintenance) and ``manager`` itself (blocks
and node state).
"""

from __future__ import annotations

from dataclasses import dataclass

import trio

from ..errors import GatewayError
from .appcalls import AppCalls
from .background.refsync import RefSyncWorker
from .background.resync import ResyncPool
from .background.workers import WorkerRegistry
from .context import NodeContext, PeerContext
from .localcounts import RefCounts
from .membership import Membership
from .metasnap import MetadataSnapshots
from .operations import Operations
from .refupdates import References


@dataclass(frozen=True, eq=False)
class StorageParts:
    """A storage node's collaborators (a gateway has none)."""

    ctx: NodeContext
    workers: WorkerRegistry
    refs: RefCounts
    resync: ResyncPool
    operations: Operations
    ref_sync: RefSyncWorker
    snapshots: MetadataSnapshots


class ManagerBase:
    """The state every group of :class:`BlockManager` members uses."""

    _ctx: PeerContext
    _storage: StorageParts | None
    _references: References
    _app: AppCalls
    _membership: Membership
    node_id: str

    def _open(self) -> trio.Nursery:
        """The node's nursery: the one check that the node is open (every member calls it,
        or :meth:`_local`, before handing the work on)."""
        return self._ctx.require_open()

    def _local(self) -> StorageParts:
        """The storage collaborators; a clear error on a gateway or a closed node."""
        self._open()
        if self._storage is None:
            raise GatewayError(self.node_id)
        return self._storage


__all__ = ["ManagerBase", "StorageParts"]
