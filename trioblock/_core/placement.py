"""Which nodes store a block: the ``Layout`` protocol and its default implementations.

``StaticLayout`` is the first version of a cluster's layout, given as a list of nodes
(optionally with zones): every node gets the same capacity, and placement is that of a
:class:`~trioblock.LayoutVersion` (the hash space cut into 256 partitions, each assigned
to ``replication_factor`` nodes, zone-aware; see ``layoutversion.py`` and
``assignment.py``). A node opened with one starts its layout history from it; later
versions (``apply_layout``) change the roles while the cluster serves.
``LocalLayout`` is the embedded single node; ``JoinCluster`` the layout of a node that
learns the cluster's layout from its peers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from functools import cached_property
from typing import Protocol, runtime_checkable

from ..errors import ConfigError
from .layoutversion import LayoutVersion


@runtime_checkable
class Layout(Protocol):
    """Where blocks live. Implementations must be deterministic and cheap to call."""

    @property
    def replication_factor(self) -> int: ...

    @property
    def write_quorum(self) -> int: ...

    @property
    def nodes(self) -> Sequence[str]:
        """Every node of the cluster."""
        ...

    def storage_nodes(self, hash: bytes) -> list[str]:
        """The nodes that should hold a copy of ``hash``."""
        ...

    def read_nodes(self, hash: bytes) -> list[str]:
        """The nodes to ask for ``hash``, best first."""
        ...


def majority(replication_factor: int) -> int:
    return replication_factor // 2 + 1


class StaticLayout:
    """The first layout of a cluster: a set of nodes (optionally with zones).

    ``nodes`` lists the storage nodes' ids, or maps each id to its zone.
    ``replication_factor`` (1 to the number of nodes) is the number of copies of each
    block; ``write_quorum`` (1 to ``replication_factor``, default a majority) the durable
    writes a put or a reference waits for. The nodes a cluster starts with are given the
    same one (a ``trioblock serve`` node builds it from its ``[peers]`` table,
    ``replication_factor`` and ``write_quorum``); it is their layout's version 1, and a
    newer version a node has stored or learns wins over it. Its placement is
    :attr:`first_version`'s. A bad value raises ``ConfigError`` naming it.
    """

    def __init__(
        self,
        nodes: Iterable[str] | Mapping[str, str],
        replication_factor: int = 3,
        write_quorum: int | None = None,
    ) -> None:
        if isinstance(nodes, Mapping):
            zones = {str(k): str(v) for k, v in nodes.items()}
        else:
            zones = {str(n): "" for n in nodes}
        if not zones:
            raise ConfigError("layout.nodes", "a layout needs at least one node")
        if not 1 <= replication_factor <= len(zones):
            raise ConfigError(
                "replication_factor",
                f"must be between 1 and the number of nodes ({len(zones)}), "
                f"got {replication_factor}",
            )
        quorum = majority(replication_factor) if write_quorum is None else write_quorum
        if not 1 <= quorum <= replication_factor:
            raise ConfigError(
                "write_quorum", f"must be between 1 and {replication_factor}, got {write_quorum}"
            )
        self._zones = zones
        self._nodes = tuple(sorted(zones))
        self._rf = replication_factor
        self._quorum = quorum

    @property
    def replication_factor(self) -> int:
        return self._rf

    @property
    def write_quorum(self) -> int:
        return self._quorum

    @property
    def nodes(self) -> Sequence[str]:
        return self._nodes

    def zone_of(self, node_id: str) -> str:
        return self._zones[node_id]

    @cached_property
    def first_version(self) -> LayoutVersion:
        """This layout as version 1 of a layout history (equal nominal capacities)."""
        return LayoutVersion.from_static(self._nodes, self._zones, self._rf, self._quorum)

    def storage_nodes(self, hash: bytes) -> list[str]:
        return self.first_version.storage_nodes(hash)

    def read_nodes(self, hash: bytes) -> list[str]:
        return self.storage_nodes(hash)

    def __repr__(self) -> str:
        return (
            f"StaticLayout({list(self._nodes)}, replication_factor={self._rf}, "
            f"write_quorum={self._quorum})"
        )


class LocalLayout:
    """The embedded default: one node that stores every block itself."""

    def __init__(self, node_id: str) -> None:
        self._node = node_id

    @property
    def replication_factor(self) -> int:
        return 1

    @property
    def write_quorum(self) -> int:
        return 1

    @property
    def nodes(self) -> Sequence[str]:
        return (self._node,)

    def storage_nodes(self, hash: bytes) -> list[str]:
        return [self._node]

    def read_nodes(self, hash: bytes) -> list[str]:
        return [self._node]


class JoinCluster:
    """The ``layout`` of a node or gateway joining a running cluster.

    It knows no version yet: it learns the cluster's layout history from ``seeds`` (node
    ids its transport can reach; by default every peer a ``TcpTransport`` was given) and
    stores nothing until a version gives it a role. Until then it is a layout with no
    storage nodes.

    Example::

        transport = trioblock.TcpTransport(listen=("0.0.0.0", 3904),
                                           peers={"n0": ("10.0.0.1", 3901)})
        async with trioblock.open_block_manager(
            config, layout=trioblock.JoinCluster(), transport=transport
        ) as bm:
            ...  # bm.layout is the cluster's current version once learned
    """

    def __init__(self, seeds: Iterable[str] = ()) -> None:
        self.seeds: tuple[str, ...] = tuple(seeds)

    @property
    def replication_factor(self) -> int:
        return 1

    @property
    def write_quorum(self) -> int:
        return 1

    @property
    def nodes(self) -> Sequence[str]:
        return ()

    def storage_nodes(self, hash: bytes) -> list[str]:
        return []

    def read_nodes(self, hash: bytes) -> list[str]:
        return []

    def __repr__(self) -> str:
        return f"JoinCluster(seeds={list(self.seeds)})"
