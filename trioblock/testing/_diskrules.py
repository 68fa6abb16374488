"""The disk-fault rules of the state machines in ``trioblock.testing.stateful``.

:class:`DiskFaultRules` is a mixin of hypothesis rules that run only when the machine's
cluster is on simulated disks (``CLUSTER["disk"] == "simulated"``):

- ``power_cut``: a node loses power (``cluster.power_loss``) and starts again;
- ``disk_fault``: the next 1..3 reads, writes or fsyncs of a node's block files (or of
  their ``aa/bb`` directories) fail with ``EIO`` (an fsync with fsyncgate semantics);
- ``fill_disk``: a node's disk is full, or nearly (``set_capacity``);
- ``free_disks``: every disk has room again and no fault armed.

The faults aim at block files only, never at the data directory itself: a node whose
marker cannot be read refuses to start, which is an operator's problem, not the
cluster's. The machine's ``check`` calls :meth:`DiskFaultRules.heal_disks` once it has healed the
network and started every node: faults are lifted (and failed resyncs retried at once)
whenever the invariants are checked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hypothesis import strategies as st
from hypothesis.stateful import precondition, rule

if TYPE_CHECKING:
    from ._cluster import Cluster
    from .stateful import ClusterThread

#: The block files and their ``aa/bb`` directories (a ``SimulatedDisk.fail`` glob).
BLOCK_PATHS = "??/??*"


def _simulated(machine: Any) -> bool:
    cluster = machine.env.cluster
    return cluster is not None and cluster.disk_kind == "simulated"


class DiskFaultRules:
    """Rules for disks that fail, active on simulated disks (see the module)."""

    if TYPE_CHECKING:
        env: ClusterThread
        down: set[str]

        def _member(self, index: int) -> str: ...

    def heal_disks(self, cluster: Cluster) -> None:
        """Disarm every fault and lift every capacity (simulated disks only), then do
        what an operator who has fixed the disks does: clear every data directory
        (``clear_data_dir``, ``trioblock dir clear``: a directory marked failing or full
        would otherwise wait for its next probe, up to minutes away) and have every
        running node retry its failed resyncs now (``retry_all_now``) rather than wait
        out their back-off."""
        if cluster.disk_kind != "simulated":
            return
        for node in cluster.node_ids:
            disk = cluster.disk(node)
            disk.clear_faults()
            disk.set_capacity(None)
        for node, bm in cluster.nodes.items():
            for data_dir in cluster.config(node).data_dirs:
                bm.clear_data_dir(data_dir.path)
            bm.retry_all_now()

    @precondition(lambda self: not self.down and _simulated(self))
    @rule(index=st.integers(0, 7))
    def power_cut(self, index: int) -> None:
        """Kill a node, cut its disk's power, start it again (simulated disks only)."""
        node = self._member(index)

        async def go(cluster: Cluster) -> None:
            await cluster.power_loss(node)

        self.env.run(go)

    @precondition(_simulated)
    @rule(
        index=st.integers(0, 7),
        op=st.sampled_from(["read", "write", "fsync"]),
        times=st.integers(1, 3),
    )
    def disk_fault(self, index: int, op: str, times: int) -> None:
        """The next ``times`` calls of ``op`` on a node's block files fail with EIO."""
        node = self._member(index)

        async def go(cluster: Cluster) -> None:
            cluster.disk(node).fail(op, BLOCK_PATHS, times=times)

        self.env.run(go)

    @precondition(_simulated)
    @rule(index=st.integers(0, 7), room=st.sampled_from([0, 1000, 8000]))
    def fill_disk(self, index: int, room: int) -> None:
        """A node's disk takes ``room`` more bytes of file data, then ``ENOSPC``."""
        node = self._member(index)

        async def go(cluster: Cluster) -> None:
            disk = cluster.disk(node)
            usage = disk.statvfs(str(cluster.data_dir(node)))
            disk.set_capacity(usage.total - usage.free + room)

        self.env.run(go)

    @precondition(_simulated)
    @rule()
    def free_disks(self) -> None:
        """Every disk has room again and fails nothing."""

        async def go(cluster: Cluster) -> None:
            self.heal_disks(cluster)

        self.env.run(go)


__all__ = ["DiskFaultRules"]
