"""Admin ops for operators' inspection and maintenance: ``block_info``, ``stats``,
``repair_refcounts``, ``meta_snapshot`` and ``meta_snapshots``.

Registered with ``@op`` when the admin service imports this module. Like the other ops they use
nothing but the ``BlockManager``'s public API and answer with CBOR-friendly maps that
fit in one message frame:

- ``block_info`` (``hash``, ``cluster``): the answering node's view, or with
  ``cluster`` every storage node's (a node that could not be asked maps to
  ``{"error": why}``). Each view lists at most :data:`MAX_REFS_SHOWN` references
  (:data:`MAX_REFS_SHOWN_CLUSTER` per node with ``cluster``); the totals count them all.
- ``stats``: every live node's figures and the cluster's usable capacity.
- ``repair_refcounts`` starts the reference recount and returns at once; the
  ``operation`` op (name ``refcounts``) reports its progress and, once over, its report.
- ``meta_snapshot`` takes a snapshot of the node's metadata database now;
  ``meta_snapshots`` lists them.
"""

from __future__ import annotations

from typing import Any, Final

from .._node import BlockInfo, BlockManager
from .admin_args import as_plain, hash_arg, owner_view
from .admin_registry import AdminResult, op

#: References listed per view by ``block_info`` (an owner is up to 128 bytes, shown
#: as text and in hex), and per node with ``cluster``.
MAX_REFS_SHOWN: Final = 100
MAX_REFS_SHOWN_CLUSTER: Final = 20


def block_view(info: BlockInfo, max_refs: int) -> dict[str, Any]:
    """A node's view of a block as plain data, owners as text and hex."""
    view: dict[str, Any] = as_plain(info)
    view["references"] = [
        {**owner_view(r.owner), "deleted": r.deleted, "updated_msec": r.updated_msec}
        for r in info.references[:max_refs]
    ]
    return view


@op("block_info")
async def _block_info(bm: BlockManager, request: dict[str, Any], body: bytes | None) -> AdminResult:
    h = hash_arg(request)
    if not request.get("cluster"):
        return {
            "hash": h.hex(),
            "nodes": {bm.node_id: block_view(await bm.block_info(h), MAX_REFS_SHOWN)},
        }
    views = await bm.cluster_block_info(h)
    return {
        "hash": h.hex(),
        "nodes": {
            node: {"error": view}
            if isinstance(view, str)
            else block_view(view, MAX_REFS_SHOWN_CLUSTER)
            for node, view in views.items()
        },
    }


@op("stats")
async def _stats(bm: BlockManager, request: dict[str, Any], body: bytes | None) -> AdminResult:
    stats = await bm.cluster_stats()
    reply: dict[str, Any] = as_plain(stats)
    for node, figures in stats.nodes.items():
        reply["nodes"][node]["data_free"] = figures.data_free
    reply["answered_by"] = bm.node_id
    reply["now"] = bm.now_msec()
    return reply


@op("repair_refcounts")
async def _repair_refcounts(
    bm: BlockManager, request: dict[str, Any], body: bytes | None
) -> AdminResult:
    status = bm.start_operation("refcounts")
    return {"started": status.started_at, "now": bm.now_msec()}


@op("meta_snapshot")
async def _meta_snapshot(
    bm: BlockManager, request: dict[str, Any], body: bytes | None
) -> AdminResult:
    snapshot = await bm.snapshot_metadata()
    kept = await bm.metadata_snapshots()
    return {
        "snapshot": as_plain(snapshot),
        "kept": [as_plain(s) for s in kept],
        "now": bm.now_msec(),
    }


@op("meta_snapshots")
async def _meta_snapshots(
    bm: BlockManager, request: dict[str, Any], body: bytes | None
) -> AdminResult:
    return {"snapshots": [as_plain(s) for s in await bm.metadata_snapshots()]}


__all__ = ["MAX_REFS_SHOWN", "MAX_REFS_SHOWN_CLUSTER", "block_view"]
