"""The node side of ``trioblock layout``: staged changes, and views of the layout.

The admin service's ``layout_*`` ops call these; like the rest of the admin service
they use only the ``BlockManager``'s public API. Rules kept here:

- **Staged changes** live in the node's own SQLite database, in a table of the admin
  service's (:data:`STAGE_TABLE`, written through ``bm.transaction()``), so that
  separate CLI invocations accumulate them and a restart keeps them. One row per node:
  the role it will get, or a removal. A gateway has no database: it refuses to stage
  (``show``, ``status`` and ``history`` work on it). At most :data:`MAX_STAGED` nodes
  are staged at once.
- ``assign`` of a node that has a role keeps what is not given (zone, capacity,
  address); a node's address, when not given, comes from the node file of the node that
  answers (``[peers]`` and its own ``rpc_bind_addr``: see :func:`known_addresses`).
- **Apply** derives the next version from the current one with the staged changes,
  and also records in it the addresses the answering node knows for roles that have
  none (a cluster started from ``[peers]`` has none in its first version, and a node
  that joins through one member needs them to reach the others). The stage is cleared
  only of the rows that were applied.
- Every reply fits in one message frame (64 KiB) whatever the layout holds: roles and
  nodes come in pages of :data:`MAX_NODES_PAGE` (``after`` a node id), history
  records in pages of :data:`MAX_RECORDS_PAGE` (``start``), each record naming at most
  :data:`RECORD_NODES_SHOWN` of its nodes.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final

from .._core.config import NODE_ID_RE
from .._core.layoutversion import LayoutVersion, NodeRole
from .._node import BlockManager, LayoutStatus
from ..errors import LayoutError

#: The admin service's table of staged layout changes in the node's database.
STAGE_TABLE: Final = "cli_layout_staged"
#: Most nodes staged at once (bounds the ``layout_show`` reply).
MAX_STAGED: Final = 32
#: Nodes per page of ``layout_show`` and ``layout_status``.
MAX_NODES_PAGE: Final = 48
#: Records per page of ``layout_history``.
MAX_RECORDS_PAGE: Final = 64
#: Node ids a history record shows (its ``node_count`` says how many it has).
RECORD_NODES_SHOWN: Final = 8

_KNOWN_ADDRESSES: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar(
    "trioblock_known_addresses", default=None
)


@contextmanager
def addresses_known(addresses: Mapping[str, str]) -> Iterator[None]:
    """Within the block, :func:`known_addresses` is ``addresses`` (node id → host:port)."""
    token = _KNOWN_ADDRESSES.set(dict(addresses))
    try:
        yield
    finally:
        _KNOWN_ADDRESSES.reset(token)


def known_addresses() -> Mapping[str, str]:
    """The addresses the answering node's file knows (empty outside ``trioblock serve``)."""
    return _KNOWN_ADDRESSES.get() or {}


def layout_message(exc: LayoutError) -> str:
    """A ``LayoutError``'s explanation without the ``invalid configuration: …`` prefix."""
    return str(exc).removeprefix(f"invalid configuration: {exc.field}: ")


def role_view(role: NodeRole | None) -> dict[str, Any] | None:
    if role is None:
        return None
    return {"zone": role.zone, "capacity": role.capacity, "address": role.address}


def current_version(bm: BlockManager) -> LayoutVersion | None:
    """The node's current layout version; None while a joining node has learned none."""
    layout = bm.layout
    return layout if isinstance(layout, LayoutVersion) else None


def is_fixed(bm: BlockManager) -> bool:
    """Whether the node's layout can never change (a user's own ``Layout``, or the
    embedded single node's: ``trioblock serve`` without ``[peers]``)."""
    return current_version(bm) is None and bm.layout_status().version != 0


def _changeable(bm: BlockManager) -> LayoutVersion:
    """The current version, or ``ValueError`` saying why this node cannot change it."""
    current = current_version(bm)
    if current is not None:
        return current
    if bm.layout_status().version == 0:
        raise ValueError(
            f"{bm.node_id} has not learned the cluster's layout yet: is a member it joins "
            "through reachable?"
        )
    raise ValueError(f"the layout of {bm.node_id} is fixed ({bm.layout!r}): it cannot change")


# ---------------------------------------------------------------------------------------
# The stage


@dataclass(frozen=True)
class Staged:
    """One staged change: ``role`` None removes the node."""

    node: str
    role: NodeRole | None
    staged_msec: int


def _require_database(bm: BlockManager) -> None:
    if bm.is_gateway:
        raise ValueError(
            f"{bm.node_id} is a gateway: it has no database to stage layout changes in; "
            "stage them on a storage node"
        )


_CREATE = (
    f"CREATE TABLE IF NOT EXISTS {STAGE_TABLE} ("
    "node_id TEXT PRIMARY KEY, zone TEXT, capacity INTEGER, address TEXT, "
    "staged_msec INTEGER NOT NULL)"
)


def read_stage(bm: BlockManager) -> list[Staged]:
    """The staged changes in node order (none on a gateway)."""
    if bm.is_gateway:
        return []
    with bm.transaction() as tx:
        tx.execute(_CREATE)
        rows = tx.execute(
            f"SELECT node_id, zone, capacity, address, staged_msec FROM {STAGE_TABLE} "
            "ORDER BY node_id"
        ).fetchall()
    return [
        Staged(node, None if capacity is None else NodeRole(zone, capacity, address), at)
        for node, zone, capacity, address, at in rows
    ]


def _write_stage(bm: BlockManager, node: str, role: NodeRole | None, *, unstage: bool) -> None:
    with bm.transaction() as tx:
        tx.execute(_CREATE)
        if unstage:
            tx.execute(f"DELETE FROM {STAGE_TABLE} WHERE node_id = ?", (node,))
            return
        count = tx.execute(
            f"SELECT count(*) FROM {STAGE_TABLE} WHERE node_id != ?", (node,)
        ).fetchone()[0]
        if count >= MAX_STAGED:
            raise ValueError(
                f"{count} nodes are staged already (at most {MAX_STAGED}): apply or revert "
                "them first"
            )
        tx.execute(
            f"INSERT OR REPLACE INTO {STAGE_TABLE} "
            "(node_id, zone, capacity, address, staged_msec) VALUES (?, ?, ?, ?, ?)",
            (
                node,
                None if role is None else role.zone,
                None if role is None else role.capacity,
                None if role is None else role.address,
                bm.now_msec(),
            ),
        )


def revert_stage(bm: BlockManager) -> int:
    """Drop every staged change; how many there were."""
    _require_database(bm)
    with bm.transaction() as tx:
        tx.execute(_CREATE)
        return int(tx.execute(f"DELETE FROM {STAGE_TABLE}").rowcount)


def _node_arg(request: dict[str, Any]) -> str:
    node = request.get("node")
    if not isinstance(node, str) or not NODE_ID_RE.fullmatch(node):
        raise ValueError(f"'node' must be a node id (1-64 of [A-Za-z0-9._-]), got {node!r}")
    return node


def stage_assign(bm: BlockManager, request: dict[str, Any]) -> list[str]:
    """Stage a role for ``node`` (``zone``, ``capacity``, ``address``: what is not given
    is kept from its staged or current role); the warnings for the operator."""
    _require_database(bm)
    current = _changeable(bm)
    node = _node_arg(request)
    staged = {s.node: s.role for s in read_stage(bm)}
    base = staged.get(node) or current.roles.get(node)
    zone = request.get("zone", None if base is None else base.zone)
    capacity = request.get("capacity", None if base is None else base.capacity)
    address = request.get("address") or (None if base is None else base.address)
    warnings: list[str] = []
    if address is None:
        address = known_addresses().get(node)
    if zone is None:
        raise ValueError(f"{node} has no role yet: give its zone")
    if capacity is None:
        raise ValueError(f"{node} has no role yet: give its capacity")
    if not isinstance(zone, str) or not (address is None or isinstance(address, str)):
        raise ValueError("'zone' and 'address' must be text")
    if isinstance(capacity, bool) or not isinstance(capacity, int):
        raise ValueError(f"'capacity' must be a number of bytes, got {capacity!r}")
    role = NodeRole(zone, capacity, address)
    try:
        role.check(node)
    except LayoutError as exc:
        raise ValueError(layout_message(exc)) from None
    if address is None:
        warnings.append(
            f"{node} has no address: the other nodes reach it only if their [peers] list it "
            "(give --address HOST:PORT)"
        )
    if current.roles.get(node) == role:
        _write_stage(bm, node, None, unstage=True)
        warnings.append(f"{node} already has this role: nothing staged for it")
    else:
        _write_stage(bm, node, role, unstage=False)
    return warnings


def stage_remove(bm: BlockManager, request: dict[str, Any]) -> list[str]:
    """Stage the removal of ``node`` (or drop a staged assignment of a node without a
    role); the warnings for the operator."""
    _require_database(bm)
    current = _changeable(bm)
    node = _node_arg(request)
    staged = {s.node for s in read_stage(bm)}
    if node not in current.roles:
        if node in staged:
            _write_stage(bm, node, None, unstage=True)
            return [f"{node} has no role: its staged assignment is dropped"]
        raise ValueError(
            f"cannot remove {node}: it has no role in layout version {current.version}"
        )
    _write_stage(bm, node, None, unstage=False)
    return []


def _fill_addresses(
    current: LayoutVersion, changes: dict[str, NodeRole | None]
) -> tuple[dict[str, NodeRole | None], list[str]]:
    """``changes`` plus the known addresses of roles that have none; the nodes filled."""
    known = known_addresses()
    out = dict(changes)
    filled: list[str] = []
    for node, role in current.roles.items():
        if node in changes or role.address is not None or node not in known:
            continue
        out[node] = NodeRole(role.zone, role.capacity, known[node])
        filled.append(node)
    return out, filled


async def apply_stage(bm: BlockManager, request: dict[str, Any]) -> dict[str, Any]:
    """Apply the staged changes (and ``replication_factor`` / ``write_quorum``)."""
    _require_database(bm)
    rf = request.get("replication_factor")
    quorum = request.get("write_quorum")
    for key, value in (("replication_factor", rf), ("write_quorum", quorum)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError(f"{key!r} must be a whole number, got {value!r}")
    current = _changeable(bm)
    stage = read_stage(bm)
    if not stage and rf is None and quorum is None:
        raise ValueError(
            "nothing is staged: stage changes with `trioblock layout assign` or "
            "`trioblock layout remove` first"
        )
    changes, filled = _fill_addresses(current, {s.node: s.role for s in stage})
    try:
        version = await bm.apply_layout(changes, replication_factor=rf, write_quorum=quorum)
    except LayoutError as exc:
        raise ValueError(f"layout change refused: {layout_message(exc)}") from None
    with bm.transaction() as tx:
        for s in stage:  # only what was applied: a change staged meanwhile stays
            tx.execute(
                f"DELETE FROM {STAGE_TABLE} WHERE node_id = ? AND staged_msec = ?",
                (s.node, s.staged_msec),
            )
    return {
        "version": version,
        "previous_version": current.version,
        "changes": [staged_view(current, s) for s in stage],
        "addresses_recorded": filled,
    }


def staged_view(current: LayoutVersion | None, s: Staged) -> dict[str, Any]:
    previous = None if current is None else current.roles.get(s.node)
    return {
        "node": s.node,
        "role": role_view(s.role),
        "previous": role_view(previous),
        "staged_msec": s.staged_msec,
    }


def preview(current: LayoutVersion, stage: list[Staged]) -> dict[str, Any] | None:
    """What applying ``stage`` would make: the next version's shape and the copies that
    move, or the reason it would be refused. None when nothing is staged."""
    if not stage:
        return None
    changes, _filled = _fill_addresses(current, {s.node: s.role for s in stage})
    try:
        new = current.derive(changes)
    except LayoutError as exc:
        return {"error": layout_message(exc)}
    moved = sum(
        len(set(after) - set(before))
        for before, after in zip(current.assignment, new.assignment, strict=True)
    )
    return {
        "version": new.version,
        "nodes": len(new.roles),
        "zones": len(new.zones),
        "replication_factor": new.replication_factor,
        "write_quorum": new.write_quorum,
        "copies": len(new.assignment) * new.replication_factor,
        "copies_moving": moved,
        "partitions": {
            s.node: {
                "before": len(current.partitions_of(s.node)),
                "after": len(new.partitions_of(s.node)),
            }
            for s in stage
        },
    }


# ---------------------------------------------------------------------------------------
# Views


def _page_after(request: dict[str, Any]) -> str | None:
    after = request.get("after")
    if after is not None and not isinstance(after, str):
        raise ValueError(f"'after' must be a node id, got {after!r}")
    return after


def _page(ids: list[str], after: str | None, limit: int) -> tuple[list[str], str | None]:
    remaining = [n for n in ids if after is None or n > after]
    page = remaining[:limit]
    return page, (page[-1] if len(remaining) > limit else None)


def show(bm: BlockManager, request: dict[str, Any], limit: int) -> dict[str, Any]:
    status = bm.layout_status()
    current = current_version(bm)
    after = _page_after(request)
    layout = bm.layout
    reply: dict[str, Any] = {
        "node_id": bm.node_id,
        "version": status.version,
        "fixed": is_fixed(bm),
        "live_versions": status.live_versions,
        "replication_factor": layout.replication_factor,
        "write_quorum": layout.write_quorum,
        "zones": 0 if current is None else len(current.zones),
        "now": bm.now_msec(),
    }
    ids = sorted(layout.nodes)
    page, reply["next"] = _page(ids, after, limit)
    reply["total_roles"] = len(ids)
    roles = []
    for node in page:
        role = None if current is None else current.roles[node]
        roles.append(
            {
                "node": node,
                **(role_view(role) or {"zone": None, "capacity": None, "address": None}),
                "partitions": None if current is None else len(current.partitions_of(node)),
            }
        )
    reply["roles"] = roles
    reply["partitions"] = None if current is None else len(current.assignment)
    if after is None:  # the staged changes come with the first page
        stage = read_stage(bm)
        reply["staged"] = [staged_view(current, s) for s in stage]
        reply["preview"] = None if current is None else preview(current, stage)
    return reply


def state_view(node: str, status: LayoutStatus) -> dict[str, Any]:
    s = status.nodes[node]
    return {
        "node": node,
        "role": role_view(s.role),
        "synced_version": s.synced_version,
        "drained": s.drained,
        "blocks_to_fetch": s.blocks_to_fetch,
        "blocks_to_hand_off": s.blocks_to_hand_off,
        "bytes_to_move": s.bytes_to_move,
    }


def status_view(bm: BlockManager, request: dict[str, Any], limit: int) -> dict[str, Any]:
    status = bm.layout_status()
    page, following = _page(sorted(status.nodes), _page_after(request), limit)
    return {
        "node_id": bm.node_id,
        "version": status.version,
        "live_versions": status.live_versions,
        "settled": status.settled,
        "blocks_left": status.blocks_left,
        "bytes_to_move": status.bytes_to_move,
        "total_nodes": len(status.nodes),
        "nodes": [state_view(n, status) for n in page],
        "next": following,
        "now": bm.now_msec(),
    }


def history_view(bm: BlockManager, start: int, limit: int) -> dict[str, Any]:
    records = bm.layout_history()
    live = set(bm.layout_status().live_versions)
    page = records[start : start + limit]
    return {
        "records": [
            {
                "version": r.version,
                "digest": r.digest.hex(),
                "applied_msec": r.applied_msec,
                "retired_msec": r.retired_msec,
                "superseded": r.superseded,
                "live": r.version in live and not r.superseded and r.retired_msec is None,
                "replication_factor": r.replication_factor,
                "write_quorum": r.write_quorum,
                "node_count": len(r.nodes),
                "nodes": list(r.nodes[:RECORD_NODES_SHOWN]),
            }
            for r in page
        ],
        "total": len(records),
        "next": start + limit if start + limit < len(records) else None,
        "now": bm.now_msec(),
    }


__all__ = [
    "MAX_NODES_PAGE",
    "MAX_RECORDS_PAGE",
    "MAX_STAGED",
    "RECORD_NODES_SHOWN",
    "STAGE_TABLE",
    "Staged",
    "addresses_known",
    "apply_stage",
    "current_version",
    "history_view",
    "is_fixed",
    "known_addresses",
    "layout_message",
    "preview",
    "read_stage",
    "revert_stage",
    "role_view",
    "show",
    "stage_assign",
    "stage_remove",
    "staged_view",
    "status_view",
]
