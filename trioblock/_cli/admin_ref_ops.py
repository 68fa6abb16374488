"""The admin ops on cluster references: ``ref_add``, ``ref_remove``, ``ref_list``,
``ref_sync``."""

from __future__ import annotations

from typing import Any, Final

from .._node import BlockManager
from ..errors import MissingBlockError
from .admin_args import (
    as_plain,
    hash_arg,
    int_arg,
    owner_arg,
    owner_view,
)
from .admin_registry import AdminResult, op

#: Most references returned by one ``ref_list`` request (an owner is up to 128 bytes,
#: shown twice: as text and in hex).
MAX_REFS_PAGE: Final = 100

# ---------------------------------------------------------------------------------------
# Cluster references


async def _ref_update(bm: BlockManager, request: dict[str, Any], *, deleted: bool) -> AdminResult:
    h = hash_arg(request)
    owner = owner_arg(request)
    block_missing = False
    if deleted:
        await bm.remove_reference(h, owner)
    else:
        try:
            await bm.add_reference(h, owner)
        except MissingBlockError:
            # Committed all the same: the operator is told to put the block.
            block_missing = True
    state = next((r for r in bm.references(h) if r.owner == owner), None)
    return {
        "hash": h.hex(),
        **owner_view(owner),
        "deleted": deleted,
        # This node's view (a node that does not store the block holds no entry).
        "local": None
        if state is None
        else {"deleted": state.deleted, "updated_msec": state.updated_msec},
        "refcount": bm.get_block_rc(h),
        "now": bm.now_msec(),
        # An add none of whose acknowledging storage nodes holds the block.
        "block_missing": block_missing,
    }


@op("ref_add")
async def _ref_add(bm: BlockManager, request: dict[str, Any], body: bytes | None) -> AdminResult:
    """``add_reference(hash, owner)`` on the block's storage nodes (a write quorum)."""
    return await _ref_update(bm, request, deleted=False)


@op("ref_remove")
async def _ref_remove(bm: BlockManager, request: dict[str, Any], body: bytes | None) -> AdminResult:
    """``remove_reference(hash, owner)``: a tombstone on the block's storage nodes."""
    return await _ref_update(bm, request, deleted=True)


@op("ref_list")
async def _ref_list(bm: BlockManager, request: dict[str, Any], body: bytes | None) -> AdminResult:
    """One page of this node's references to ``hash`` in owner order: ``after`` (owner
    in hex, exclusive), ``limit``."""
    h = hash_arg(request)
    limit = int_arg(request, "limit", MAX_REFS_PAGE, low=1, high=MAX_REFS_PAGE)
    after = request.get("after")
    if after is not None and not isinstance(after, str):
        raise ValueError(f"'after' must be an owner in hex, got {after!r}")
    entries = sorted(bm.references(h), key=lambda r: r.owner)
    remaining = [r for r in entries if after is None or r.owner.hex() > after]
    page = remaining[:limit]
    return {
        "hash": h.hex(),
        "references": [
            {**owner_view(r.owner), "deleted": r.deleted, "updated_msec": r.updated_msec}
            for r in page
        ],
        "total": len(entries),
        "alive": sum(not r.deleted for r in entries),
        "refcount": bm.get_block_rc(h),
        "next": page[-1].owner.hex() if len(remaining) > limit else None,
        "now": bm.now_msec(),
    }


@op("ref_sync")
async def _ref_sync(bm: BlockManager, request: dict[str, Any], body: bytes | None) -> AdminResult:
    """Run a reference anti-entropy pass now; its report."""
    report = await bm.sync_references()
    return {"report": as_plain(report), "now": bm.now_msec()}


__all__ = ["MAX_REFS_PAGE"]
