"""What ``BlockManager.layout_status()`` returns: where a layout change stands."""

from __future__ import annotations

from dataclasses import dataclass

from .._core.layoutversion import NodeRole


@dataclass(frozen=True)
class NodeLayoutState:
    """One node's part in a layout change (``LayoutStatus.nodes``).

    ``role`` in the current version (None: none); ``synced_version``: the newest version
    whose blocks and references it holds; ``drained``: outside every live version and
    holding nothing (it may be switched off). At its last report: ``blocks_to_fetch``,
    referenced blocks the current version gives it and it lacks; ``blocks_to_hand_off``,
    copies it holds that the current version does not give it (handed off once no live
    version does, then deleted); ``bytes_to_move``, their size.
    """

    role: NodeRole | None
    synced_version: int
    drained: bool
    blocks_to_fetch: int
    blocks_to_hand_off: int
    bytes_to_move: int


@dataclass(frozen=True)
class LayoutStatus:
    """Where a layout change stands (``bm.layout_status()``).

    ``version``: the current version (0: none known yet); ``live_versions``: the
    versions still in use, oldest first; ``nodes``: every node of a live version and
    every node still draining. ``settled`` is true once one version is live, every node
    with a role is synced to it and has nothing left to fetch or hand off (its surplus
    copies are deleted), and every other node is drained.
    """

    version: int
    live_versions: list[int]
    nodes: dict[str, NodeLayoutState]

    @property
    def settled(self) -> bool:
        return len(self.live_versions) == 1 and all(
            (
                s.synced_version >= self.version
                and s.blocks_to_fetch == 0
                and s.blocks_to_hand_off == 0
            )
            if s.role is not None
            else s.drained
            for s in self.nodes.values()
        )

    @property
    def blocks_left(self) -> int:
        """Blocks still to fetch or hand off, over every node's last report."""
        return sum(s.blocks_to_fetch + s.blocks_to_hand_off for s in self.nodes.values())

    @property
    def bytes_to_move(self) -> int:
        return sum(s.bytes_to_move for s in self.nodes.values())


__all__ = ["LayoutStatus", "NodeLayoutState"]
