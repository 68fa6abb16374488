"""The operator protocol: ``Admin`` requests arriving over the authenticated transport.

``trioblock serve`` installs :func:`answer_admin` as the node's admin handler
(``open_block_manager(..., admin_handler=answer_admin)``). It uses nothing but the
``BlockManager``'s public API.

The CLI sends ``{"op": NAME, ...}`` maps, optionally followed by a body (the block of a
``put``); each op maps to one ``BlockManager`` member and answers with a CBOR-friendly
map, optionally followed by a body (the block of a ``get``). Rules kept here:

- Nothing here can stop the node. An unknown op or a bad argument (``ValueError`` /
  ``TypeError`` while parsing or applying it) becomes :class:`AdminRequestError`, which
  the RPC layer sends back as a ``refused`` error with this module's message; a
  ``TrioblockError`` from the node (``MissingBlockError``, ``QuorumError``…) keeps its
  own kind.
- Every reply fits in one message frame (64 KiB): block contents travel as bodies, and
  the resync error list is paginated (``after`` / ``limit``, at most
  :data:`MAX_ERRORS_PAGE` entries).
- Times are node milliseconds (wall clock at start plus Trio's clock since); every
  reply holding times also holds the node's ``now``, so a client can show them relative.
- Long operator work (repair, rebalance) is started with ``bm.start_operation`` and
  the op returns at once; ``operation`` reports its progress (``bm.operation_status``)
  and, once over, its report or error, so the CLI can draw a progress bar by polling.
  The scrub is driven by ``scrub`` and reported by ``operation`` too.

- Cluster references go through ``add_reference`` / ``remove_reference`` (a quorum of
  the block's storage nodes, whichever node answers); ``ref_list`` shows the answering
  node's own view, paginated like the errors (``after`` an owner in hex, ``limit`` at
  most :data:`MAX_REFS_PAGE`); owners travel as bytes and are shown both as text (when
  they are UTF-8) and in hex.

- Layout changes (``layout_*``, see :mod:`.layout_admin`): ``layout_stage`` stages
  ``assign`` / ``remove`` changes in a table of the admin service's own in the node's
  database, ``layout_apply`` applies them with ``bm.apply_layout``; ``layout_show``,
  ``layout_status`` and ``layout_history`` are paginated views. ``trioblock serve``
  installs ``admin_handler(addresses)`` so that these ops know the addresses of its node
  file (``[peers]`` and ``rpc_bind_addr``), which they record in roles lacking one.

Ops: ``info``, ``status``, ``workers``, ``errors``, ``retry_now``, ``purge``,
``set_resync``, ``data_dir_clear`` (a full or failing data directory back to ok),
``put`` (body), ``get`` (reply body), ``metrics``, ``scrub``, ``repair``,
``rebalance``, ``operation``, ``ref_add``, ``ref_remove``, ``ref_list``, ``ref_sync``,
``layout_show``, ``layout_stage``, ``layout_revert``, ``layout_forget``, ``layout_apply``,
``layout_status``, ``layout_history``; and those of :mod:`.admin_reports`
(``block_info``, ``stats``, ``repair_refcounts``, ``meta_snapshot``, ``meta_snapshots``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Final

from .._net.messages import PROTOCOL_VERSION
from .._node import BlockManager
from ..errors import AdminRequestError, TrioblockError
from . import admin_layout_ops, admin_ref_ops, admin_reports, dirs, layout_admin
from .admin_args import (
    BACKGROUND_OPERATIONS,
    as_plain,
    hash_arg,
    int_arg,
    operation_view,
    owner_view,
    reference_rows,
)
from .admin_ref_ops import MAX_REFS_PAGE
from .admin_registry import OPS, AdminOp, AdminResult, op
from .dirs import data_dir_usage

log = logging.getLogger("trioblock.admin")

#: Most resync errors returned by one ``errors`` request (each entry is ~150 bytes).
MAX_ERRORS_PAGE: Final = 200
#: The name of the reference anti-entropy worker in ``workers()``.
REF_SYNC_WORKER: Final = "ref-sync"
#: The modules whose ops register themselves (with ``@op``) besides this one's.
OP_MODULES: Final = (admin_ref_ops, admin_layout_ops, admin_reports)


async def answer_admin(
    bm: BlockManager, request: dict[str, Any], body: bytes | None = None
) -> AdminResult:
    """Apply one operator request with its optional body; ``AdminRequestError`` if bad."""
    name = request.get("op")
    if not isinstance(name, str) or name not in OPS:
        raise AdminRequestError(f"unknown admin op {name!r}; known: {', '.join(sorted(OPS))}")
    spec = OPS[name]
    if body is not None and not spec.accepts_body:
        raise AdminRequestError(f"admin op {name!r} takes no body")
    try:
        return await spec.fn(bm, request, body)
    except TrioblockError:
        raise
    except (ValueError, TypeError) as exc:
        log.info("admin %s refused: %s", name, exc)
        raise AdminRequestError(str(exc)) from exc


def admin_handler(addresses: Mapping[str, str]) -> AdminOp:
    """:func:`answer_admin` for a node whose file knows ``addresses`` (node id →
    ``host:port``): the layout ops record them in roles that have none."""
    known = dict(addresses)

    async def handler(
        bm: BlockManager, request: dict[str, Any], body: bytes | None = None
    ) -> AdminResult:
        with layout_admin.addresses_known(known):
            return await answer_admin(bm, request, body)

    return handler


# ---------------------------------------------------------------------------------------
# The ops


@op("info")
async def _info(bm: BlockManager, request: dict[str, Any], body: bytes | None) -> AdminResult:
    return {
        "node_id": bm.node_id,
        "protocol_version": PROTOCOL_VERSION,
        "max_block_size": bm.config.max_block_size,
        "now": bm.now_msec(),
    }


@op("status")
async def _status(bm: BlockManager, request: dict[str, Any], body: bytes | None) -> AdminResult:
    status: dict[str, Any] = {
        "node_id": bm.node_id,
        "now": bm.now_msec(),
        "uptime": round(bm.uptime(), 3),
        "rc_len": bm.rc_len(),
        "ref_len": reference_rows(bm),
        "stored": as_plain(bm.stored()),
        "resync_queue_len": bm.resync_queue_len(),
        "resync_errors_len": bm.resync_errors_len(),
        "resync_workers": bm.resync_workers,
        "resync_tranquility": bm.resync_tranquility,
        "layout": _layout_summary(bm),
        "data_dirs": await data_dir_usage(bm),
        "compression_level": bm.config.compression_level,
        "max_block_size": bm.config.max_block_size,
        "metrics": bm.metrics.counters(),
        "scrub": as_plain(bm.scrub_status()),
        "operations": {name: operation_view(bm, name) for name in BACKGROUND_OPERATIONS},
    }
    return status


def _layout_summary(bm: BlockManager) -> dict[str, Any]:
    layout = bm.layout_status()
    return {
        "fixed": layout_admin.is_fixed(bm),
        "nodes": list(bm.layout.nodes),
        "replication_factor": bm.layout.replication_factor,
        "write_quorum": bm.layout.write_quorum,
        "version": layout.version,
        "live_versions": layout.live_versions,
        "settled": layout.settled,
        "blocks_left": layout.blocks_left,
        "bytes_to_move": layout.bytes_to_move,
    }


@op("workers")
async def _workers(bm: BlockManager, request: dict[str, Any], body: bytes | None) -> AdminResult:
    return {"workers": as_plain(bm.workers()), "now": bm.now_msec()}


@op("errors")
async def _errors(bm: BlockManager, request: dict[str, Any], body: bytes | None) -> AdminResult:
    """One page of the resync errors, in hash order: ``after`` (hex, exclusive), ``limit``."""
    limit = int_arg(request, "limit", MAX_ERRORS_PAGE, low=1, high=MAX_ERRORS_PAGE)
    after = hash_arg(request, "after").hex() if request.get("after") is not None else ""
    entries = sorted(bm.list_resync_errors(), key=lambda e: bytes(e.hash))
    remaining = [e for e in entries if e.hash.hex() > after]
    page = remaining[:limit]
    more = len(remaining) > limit
    return {
        "errors": as_plain(page),
        "total": len(entries),
        "next": page[-1].hash.hex() if more else None,
        "now": bm.now_msec(),
    }


@op("retry_now")
async def _retry_now(bm: BlockManager, request: dict[str, Any], body: bytes | None) -> AdminResult:
    if request.get("all"):
        return {"queued": bm.retry_all_now(), "had_error": None}
    had_error = bm.retry_now(hash_arg(request))
    return {"queued": 1, "had_error": had_error}


@op("purge")
async def _purge(bm: BlockManager, request: dict[str, Any], body: bytes | None) -> AdminResult:
    h = hash_arg(request)
    refcount = bm.get_block_rc(h)
    had_error = any(e.hash == h for e in bm.list_resync_errors())
    removed = bm.purge(h)
    return {
        "hash": h.hex(),
        "refcount": refcount,
        "had_error": had_error,
        "removed_copies": removed,
        "known": bool(refcount or had_error or removed),
    }


op("data_dir_clear")(dirs.data_dir_clear)


@op("set_resync")
async def _set_resync(bm: BlockManager, request: dict[str, Any], body: bytes | None) -> AdminResult:
    if "workers" in request:
        bm.set_resync_workers(request["workers"])
    if "tranquility" in request:
        bm.set_resync_tranquility(request["tranquility"])
    return {"workers": bm.resync_workers, "tranquility": bm.resync_tranquility}


@op("put", body=True)
async def _put(bm: BlockManager, request: dict[str, Any], body: bytes | None) -> AdminResult:
    """Store the body (or, for small blocks, ``data``); ``incref`` takes a reference."""
    data = body if body is not None else request.get("data")
    if not isinstance(data, bytes):
        raise ValueError("put needs a body (or 'data' bytes)")
    h = await bm.put_block(data, compress=bool(request.get("compress", True)))
    if request.get("incref"):
        bm.incref(h)
    return {"hash": h.hex(), "size": len(data), "refcount": bm.get_block_rc(h)}


@op("get")
async def _get(bm: BlockManager, request: dict[str, Any], body: bytes | None) -> AdminResult:
    h = hash_arg(request)
    data = await bm.get_block(h)
    return {"hash": h.hex(), "size": len(data)}, data


@op("metrics")
async def _metrics(bm: BlockManager, request: dict[str, Any], body: bytes | None) -> AdminResult:
    return {
        "counters": bm.metrics.counters(),
        "durations": as_plain(bm.metrics.durations()),
    }


@op("scrub")
async def _scrub(bm: BlockManager, request: dict[str, Any], body: bytes | None) -> AdminResult:
    """``cmd``: start, pause (``seconds``), resume, cancel, status; or ``tranquility``."""
    if "tranquility" in request:
        tranquility = request["tranquility"]
        if isinstance(tranquility, bool) or not isinstance(tranquility, int):
            raise ValueError(f"scrub tranquility must be an integer, got {tranquility!r}")
        status = await bm.scrub(tranquility)
    else:
        cmd = request.get("cmd", "status")
        if cmd == "status":
            status = bm.scrub_status()
        elif cmd in ("start", "pause", "resume", "cancel"):
            seconds = request.get("seconds")
            status = await bm.scrub(cmd, seconds)
        else:
            raise ValueError(f"unknown scrub command {cmd!r}: start, pause, resume, cancel")
    return {"scrub": as_plain(status), "now": bm.now_msec()}


@op("repair")
async def _repair(bm: BlockManager, request: dict[str, Any], body: bytes | None) -> AdminResult:
    bm.start_operation("repair")
    return {"operation": operation_view(bm, "repair")}


@op("rebalance")
async def _rebalance(bm: BlockManager, request: dict[str, Any], body: bytes | None) -> AdminResult:
    bm.start_operation("rebalance")
    return {"operation": operation_view(bm, "rebalance")}


@op("operation")
async def _operation(bm: BlockManager, request: dict[str, Any], body: bytes | None) -> AdminResult:
    name = request.get("name")
    if not isinstance(name, str):
        raise ValueError("operation needs 'name': scrub, repair, rebalance or refcounts")
    return {"operation": operation_view(bm, name)}


__all__ = [
    "MAX_ERRORS_PAGE",
    "MAX_REFS_PAGE",
    "REF_SYNC_WORKER",
    "OPS",
    "AdminRequestError",
    "AdminResult",
    "admin_handler",
    "answer_admin",
    "as_plain",
    "data_dir_usage",
    "op",
    "owner_view",
    "reference_rows",
]
