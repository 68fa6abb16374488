"""Which nodes store a block: the ``Layout`` protocol and its default implementations.

``StaticLayout`` uses rendezvous (highest-random-weight) hashing: every node gets a score
``blake2b(hash ‖ node_id)`` for each block and the block lives on the best-scored
``replication_factor`` nodes. Adding or removing a node moves only the blocks whose top
set changes, and every node computes the same answer with no coordination. When nodes
carry zones, the first pass takes the best node of each zone before any zone gets a
second replica, so a block survives the loss of a zone whenever there are enough zones.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol, runtime_checkable

from ..errors import ConfigError


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
    """A fixed set of nodes (optionally with zones), placed by rendezvous hashing.

    ``nodes`` lists the storage nodes' ids, or maps each id to its zone.
    ``replication_factor`` (1 to the number of nodes) is the number of copies of each
    block; ``write_quorum`` (1 to ``replication_factor``, default a majority) the durable
    writes a put or a reference waits for. Every node, and every gateway, of a cluster
    must be given the same layout: a ``trioblock serve`` node builds it from its
    ``[peers]`` table, ``replication_factor`` and ``write_quorum``. A bad value raises
    ``ConfigError`` naming it.
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
        self._zoned = len(set(zones.values())) > 1

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

    def _ranked(self, hash: bytes) -> list[str]:
        def score(node: str) -> bytes:
            return hashlib.blake2b(bytes(hash) + node.encode(), digest_size=16).digest()

        return sorted(self._nodes, key=score, reverse=True)

    def storage_nodes(self, hash: bytes) -> list[str]:
        ranked = self._ranked(hash)
        if not self._zoned:
            return ranked[: self._rf]
        chosen: list[str] = []
        zones_used: set[str] = set()
        for node in ranked:
            if self._zones[node] not in zones_used:
                chosen.append(node)
                zones_used.add(self._zones[node])
                if len(chosen) == self._rf:
                    return chosen
        for node in ranked:
            if node not in chosen:
                chosen.append(node)
                if len(chosen) == self._rf:
                    break
        return chosen

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
