"""Cluster layout versions: who stores what, as immutable values (pure).

Rules kept here:

- A :class:`NodeRole` gives a node a zone, a capacity in bytes (> 0) and, optionally,
  the ``host:port`` other nodes reach it at.
- A :class:`LayoutVersion` is a numbered set of roles with a replication factor, a
  write quorum and the assignment of the :data:`~.assignment.N_PARTITIONS` partitions
  of the hash space to ``replication_factor`` nodes each. Placement is a pure function
  of the version: ``storage_nodes(hash)`` is the assignment of the hash's partition, so
  every node and gateway holding the same version computes the same answer.
- A new version is *derived* from the current one (:meth:`LayoutVersion.derive`):
  roles changed or removed, the assignment recomputed from the previous one so that as
  few copies as possible move. An invalid change raises :class:`LayoutError` naming
  the problem.
- Versions travel between nodes as CBOR-ready maps; :meth:`LayoutVersion.from_map`
  trusts nothing (a peer's map is checked as strictly as a wire message).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import cbor2

from ..errors import LayoutError
from .assignment import N_PARTITIONS, assign_partitions, partition_of_hash

#: Most roles one version may hold (bounds what a peer can make us decode).
MAX_ROLES = 1024
#: What a node id of a layout role is made of.
NODE_ID_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}")
_ADDRESS = re.compile(r"[^\s:]{1,253}:[0-9]{1,5}|\[[0-9A-Fa-f:.]{2,45}\]:[0-9]{1,5}")
#: Nominal capacity of the roles of a version bootstrapped from a ``StaticLayout``
#: (which has none): every node gets the same share.
NOMINAL_CAPACITY = 1 << 40


def _majority(replication_factor: int) -> int:
    return replication_factor // 2 + 1


def check_node_id(node_id: object) -> str:
    if not isinstance(node_id, str) or not NODE_ID_PATTERN.fullmatch(node_id):
        raise LayoutError(f"node id {node_id!r} must be 1-64 characters of [A-Za-z0-9._-]")
    return node_id


def parse_address(address: str) -> tuple[str, int]:
    """``"host:port"`` (or ``"[v6]:port"``) as ``(host, port)``; ``LayoutError`` if bad."""
    if not isinstance(address, str) or not _ADDRESS.fullmatch(address):
        raise LayoutError(f"address {address!r} must be HOST:PORT")
    host, _, port = address.rpartition(":")
    number = int(port)
    if not 0 < number < 65536:
        raise LayoutError(f"address {address!r}: port out of range")
    return host.strip("[]"), number


@dataclass(frozen=True, init=False)
class NodeRole:
    """A storage node's role in a layout: ``zone``, ``capacity`` (bytes) and ``address``.

    ``capacity`` weighs the node's share of the blocks; ``zone`` groups nodes that fail
    together (a rack, a site): the copies of a block go to distinct zones whenever there
    are enough of them. ``address`` (``"host:port"``, optional) is where the other nodes
    reach it: a ``TcpTransport`` learns it from the layout, so a node added to a running
    cluster needs no restart of the others.

    Example::

        trioblock.NodeRole(zone="dc1", capacity=4 * 2**40, address="10.0.0.5:3901")
    """

    zone: str
    capacity: int
    address: str | None

    def __init__(self, zone: str = "", capacity: int | None = None, address: str | None = None):
        if capacity is None:
            raise TypeError("NodeRole needs a capacity (bytes, > 0)")
        object.__setattr__(self, "zone", zone)
        object.__setattr__(self, "capacity", capacity)
        object.__setattr__(self, "address", address)

    def check(self, node_id: str) -> None:
        """``LayoutError`` unless the role is valid (``node_id`` names it in the message)."""
        if not isinstance(self.zone, str) or len(self.zone) > 64:
            raise LayoutError(f"{node_id}: zone must be a string of at most 64 characters")
        if isinstance(self.capacity, bool) or not isinstance(self.capacity, int):
            raise LayoutError(f"{node_id}: capacity must be an integer number of bytes")
        if self.capacity <= 0:
            raise LayoutError(f"{node_id}: capacity must be > 0, got {self.capacity}")
        if self.address is not None:
            parse_address(self.address)

    def to_list(self) -> list[Any]:
        return [self.zone, self.capacity, self.address]

    @classmethod
    def from_list(cls, node_id: str, value: object) -> NodeRole:
        if not isinstance(value, list) or len(value) != 3:
            raise LayoutError(f"{node_id}: a role is [zone, capacity, address]")
        zone, capacity, address = value
        if not isinstance(zone, str) or not (address is None or isinstance(address, str)):
            raise LayoutError(f"{node_id}: bad role {value!r}")
        if not isinstance(capacity, int) or isinstance(capacity, bool):
            raise LayoutError(f"{node_id}: bad capacity {capacity!r}")
        role = cls(zone, capacity, address)
        role.check(node_id)
        return role


@dataclass(frozen=True, eq=False)
class LayoutVersion:
    """One version of the cluster layout (``bm.layout`` on a node with a layout history).

    ``version`` (≥ 1), ``roles`` (node id → :class:`NodeRole`), ``replication_factor``,
    ``write_quorum``, ``applied_msec`` (when it was applied, wall clock) and
    ``assignment`` (the nodes of each partition). Implements :class:`~trioblock.Layout`:
    ``nodes`` are the nodes holding a role, ``storage_nodes(hash)`` the
    ``replication_factor`` nodes of the hash's partition.
    """

    version: int
    roles: Mapping[str, NodeRole]
    replication_factor: int
    write_quorum: int
    assignment: tuple[tuple[str, ...], ...] = field(repr=False)
    applied_msec: int = 0

    # -- the Layout protocol ---------------------------------------------------------------

    @cached_property
    def nodes(self) -> Sequence[str]:
        return tuple(sorted(self.roles))

    def storage_nodes(self, hash: bytes) -> list[str]:
        return list(self.assignment[partition_of_hash(hash)])

    def read_nodes(self, hash: bytes) -> list[str]:
        return self.storage_nodes(hash)

    def zone_of(self, node_id: str) -> str:
        return self.roles[node_id].zone

    @cached_property
    def zones(self) -> frozenset[str]:
        return frozenset(r.zone for r in self.roles.values())

    def partitions_of(self, node_id: str) -> list[int]:
        """The partitions ``node_id`` stores a copy of."""
        return [p for p, nodes in enumerate(self.assignment) if node_id in nodes]

    # -- identity --------------------------------------------------------------------------

    @cached_property
    def digest(self) -> bytes:
        """A digest of the whole value: two versions with one number and different
        content are told apart (and one of them chosen) by it."""
        return hashlib.blake2b(cbor2.dumps(self._map), digest_size=16).digest()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LayoutVersion) and self.digest == other.digest

    def __hash__(self) -> int:
        return hash(self.digest)

    def __repr__(self) -> str:
        return (
            f"LayoutVersion(version={self.version}, nodes={list(self.nodes)}, "
            f"replication_factor={self.replication_factor}, write_quorum={self.write_quorum})"
        )

    # -- making versions -------------------------------------------------------------------

    @classmethod
    def first(
        cls,
        roles: Mapping[str, NodeRole],
        replication_factor: int,
        write_quorum: int | None = None,
        *,
        version: int = 1,
        applied_msec: int = 0,
    ) -> LayoutVersion:
        """A version with no predecessor (``LayoutError`` if invalid)."""
        roles = dict(sorted(roles.items()))
        quorum = _check(roles, replication_factor, write_quorum)
        assignment = assign_partitions(
            {n: (r.zone, r.capacity) for n, r in roles.items()}, replication_factor
        )
        return cls(version, roles, replication_factor, quorum, assignment, applied_msec)

    @classmethod
    def from_static(
        cls,
        nodes: Iterable[str],
        zones: Mapping[str, str],
        replication_factor: int,
        write_quorum: int,
    ) -> LayoutVersion:
        """Version 1 of a cluster started from a fixed list of nodes (equal capacities)."""
        roles = {n: NodeRole(zones.get(n, ""), NOMINAL_CAPACITY) for n in nodes}
        return cls.first(roles, replication_factor, write_quorum)

    def derive(
        self,
        changes: Mapping[str, NodeRole | None],
        *,
        replication_factor: int | None = None,
        write_quorum: int | None = None,
        applied_msec: int = 0,
    ) -> LayoutVersion:
        """The next version: ``changes`` maps node ids to their new role (``None``
        removes the node). The assignment moves as few copies as it can.

        ``LayoutError`` (and nothing made) for an unknown node removed, a bad role, fewer
        nodes than the replication factor, a quorum out of range, or no change at all.
        """
        roles = dict(self.roles)
        for node_id, role in changes.items():
            check_node_id(node_id)
            if role is None:
                if node_id not in roles:
                    raise LayoutError(f"cannot remove {node_id}: it has no role in the layout")
                del roles[node_id]
            elif not isinstance(role, NodeRole):
                raise LayoutError(f"{node_id}: a change is a NodeRole or None, got {role!r}")
            else:
                roles[node_id] = role
        rf = self.replication_factor if replication_factor is None else replication_factor
        if write_quorum is None:
            # Keep the quorum unless the replication factor changes (then a majority).
            quorum = self.write_quorum if rf == self.replication_factor else None
        else:
            quorum = write_quorum
        roles = dict(sorted(roles.items()))
        quorum = _check(roles, rf, quorum)
        if (
            roles == dict(self.roles)
            and rf == self.replication_factor
            and (quorum == self.write_quorum)
        ):
            raise LayoutError("the changes leave the layout as it is")
        previous = self.assignment if rf == self.replication_factor else None
        assignment = assign_partitions(
            {n: (r.zone, r.capacity) for n, r in roles.items()}, rf, previous
        )
        return LayoutVersion(self.version + 1, roles, rf, quorum, assignment, applied_msec)

    # -- wire and database form ------------------------------------------------------------

    def to_map(self) -> dict[str, Any]:
        return dict(self._map)

    @cached_property
    def _map(self) -> dict[str, Any]:
        ids = list(self.nodes)
        index = {n: i for i, n in enumerate(ids)}
        return {
            "version": self.version,
            "rf": self.replication_factor,
            "quorum": self.write_quorum,
            "applied": self.applied_msec,
            "roles": {n: self.roles[n].to_list() for n in ids},
            "assignment": [[index[n] for n in part] for part in self.assignment],
        }

    @classmethod
    def from_map(cls, m: object) -> LayoutVersion:
        """Check and decode a version map (``LayoutError`` on anything off)."""
        if not isinstance(m, dict):
            raise LayoutError("a layout version must be a map")
        version, rf, quorum, applied = (m.get(k) for k in ("version", "rf", "quorum", "applied"))
        for name, value in (("version", version), ("rf", rf), ("quorum", quorum)):
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value < 2**62:
                raise LayoutError(f"layout version: bad {name} {value!r}")
        if not isinstance(applied, int) or isinstance(applied, bool) or not 0 <= applied < 2**62:
            raise LayoutError(f"layout version: bad applied time {applied!r}")
        raw_roles = m.get("roles")
        if not isinstance(raw_roles, dict) or not 0 < len(raw_roles) <= MAX_ROLES:
            raise LayoutError(f"layout version: roles must be a map of 1..{MAX_ROLES} nodes")
        roles = {check_node_id(n): NodeRole.from_list(n, r) for n, r in sorted(raw_roles.items())}
        assert isinstance(rf, int) and isinstance(quorum, int) and isinstance(version, int)
        _check(roles, rf, quorum)
        ids = list(roles)
        raw = m.get("assignment")
        if not isinstance(raw, list) or len(raw) != N_PARTITIONS:
            raise LayoutError(f"layout version: the assignment needs {N_PARTITIONS} partitions")
        parts: list[tuple[str, ...]] = []
        for p, part in enumerate(raw):
            if (
                not isinstance(part, list)
                or len(part) != rf
                or not all(isinstance(i, int) and 0 <= i < len(ids) for i in part)
                or len(set(part)) != rf
            ):
                raise LayoutError(f"layout version: partition {p} must name {rf} distinct nodes")
            parts.append(tuple(ids[i] for i in part))
        assert isinstance(applied, int)
        return cls(version, roles, rf, quorum, tuple(parts), applied)


def _check(roles: Mapping[str, NodeRole], rf: object, quorum: object | None) -> int:
    """Validate roles, replication factor and quorum; return the quorum to use."""
    for node_id, role in roles.items():
        check_node_id(node_id)
        role.check(node_id)
    if len(roles) > MAX_ROLES:
        raise LayoutError(f"a layout holds at most {MAX_ROLES} nodes")
    if not isinstance(rf, int) or isinstance(rf, bool) or rf < 1:
        raise LayoutError(f"replication factor must be a positive integer, got {rf!r}")
    if len(roles) < rf:
        raise LayoutError(
            f"{len(roles)} storage node(s) is fewer than the replication factor {rf}",
            "replication_factor",
        )
    q = _majority(rf) if quorum is None else quorum
    if not isinstance(q, int) or isinstance(q, bool) or not 1 <= q <= rf:
        raise LayoutError(
            f"write quorum must be between 1 and {rf}, got {quorum!r}", "write_quorum"
        )
    return q


__all__ = [
    "MAX_ROLES",
    "NODE_ID_PATTERN",
    "NOMINAL_CAPACITY",
    "LayoutVersion",
    "NodeRole",
    "check_node_id",
    "parse_address",
]
