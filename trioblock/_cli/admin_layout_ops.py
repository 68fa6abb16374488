"""The admin ops on the cluster layout: ``layout_show``, ``layout_stage``,
``layout_revert``, ``layout_forget``, ``layout_apply``, ``layout_status``,
``layout_history``."""

from __future__ import annotations

from typing import Any

from .._node import BlockManager
from ..errors import AdminRequestError
from . import layout_admin
from .admin_args import (
    int_arg,
)
from .admin_registry import AdminResult, op

# ---------------------------------------------------------------------------------------
# Layout changes


@op("layout_show")
async def _layout_show(
    bm: BlockManager, request: dict[str, Any], body: bytes | None
) -> AdminResult:
    """The current version (a page of its roles, ``after`` a node id), the live
    versions, and with the first page the staged changes and what applying them makes."""
    limit = int_arg(
        request, "limit", layout_admin.MAX_NODES_PAGE, low=1, high=layout_admin.MAX_NODES_PAGE
    )
    return layout_admin.show(bm, request, limit)


@op("layout_stage")
async def _layout_stage(
    bm: BlockManager, request: dict[str, Any], body: bytes | None
) -> AdminResult:
    """``action``: ``assign`` (``node``, ``zone``, ``capacity``, ``address``) or
    ``remove`` (``node``); the stage afterwards and what applying it makes."""
    action = request.get("action")
    if action == "assign":
        warnings = layout_admin.stage_assign(bm, request)
    elif action == "remove":
        warnings = layout_admin.stage_remove(bm, request)
    else:
        raise ValueError(f"unknown layout_stage action {action!r}: assign or remove")
    reply = layout_admin.show(bm, {}, 1)
    return {
        "warnings": warnings,
        "version": reply["version"],
        "staged": reply["staged"],
        "preview": reply["preview"],
        "now": reply["now"],
    }


@op("layout_revert")
async def _layout_revert(
    bm: BlockManager, request: dict[str, Any], body: bytes | None
) -> AdminResult:
    return {"dropped": layout_admin.revert_stage(bm), "version": bm.layout_status().version}


@op("layout_forget")
async def _layout_forget(
    bm: BlockManager, request: dict[str, Any], body: bytes | None
) -> AdminResult:
    """Declare a removed node gone for good (``node``): it counts as drained."""
    node = request.get("node")
    if not isinstance(node, str) or not node:
        raise AdminRequestError("layout_forget needs a node id")
    await bm.forget_node(node)
    return {"forgotten": node, "version": bm.layout_status().version}


@op("layout_apply")
async def _layout_apply(
    bm: BlockManager, request: dict[str, Any], body: bytes | None
) -> AdminResult:
    """Apply the staged changes (``replication_factor``, ``write_quorum`` optional)."""
    return {**(await layout_admin.apply_stage(bm, request)), "now": bm.now_msec()}


@op("layout_status")
async def _layout_status(
    bm: BlockManager, request: dict[str, Any], body: bytes | None
) -> AdminResult:
    """Where the layout change stands, with a page of the nodes (``after`` a node id)."""
    limit = int_arg(
        request, "limit", layout_admin.MAX_NODES_PAGE, low=1, high=layout_admin.MAX_NODES_PAGE
    )
    return layout_admin.status_view(bm, request, limit)


@op("layout_history")
async def _layout_history(
    bm: BlockManager, request: dict[str, Any], body: bytes | None
) -> AdminResult:
    """A page of the layout versions this node has seen, oldest first (``start``)."""
    start = int_arg(request, "start", 0, low=0, high=2**31)
    limit = int_arg(
        request,
        "limit",
        layout_admin.MAX_RECORDS_PAGE,
        low=1,
        high=layout_admin.MAX_RECORDS_PAGE,
    )
    return layout_admin.history_view(bm, start, limit)


__all__: list[str] = []
