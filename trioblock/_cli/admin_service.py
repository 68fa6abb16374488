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
``set_resync``, ``put`` (body), ``get`` (reply body), ``metrics``, ``scrub``, ``repair``,
``rebalance``, ``operation``, ``ref_add``, ``ref_remove``, ``ref_list``, ``ref_sync``,
``layout_show``, ``layout_stage``, ``layout_revert``, ``layout_forget``, ``layout_apply``,
``layout_status``, ``layout_history``; and those of :mod:`.admin_reports`
(``block_info``, ``stats``, ``repair_refcounts``, ``meta_snapshot``, ``meta_snapshots``).
"""

from __future__ import annotations

import dataclasses
import enum
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from .._core.hashing import Hash
from .._net.messages import PROTOCOL_VERSION
from .._node import BlockManager, ScrubState
from ..errors import AdminRequestError, MissingBlockError, TrioblockError
from . import layout_admin

log = logging.getLogger("trioblock.admin")

#: An op's answer: a reply map, or a reply map and a body to stream after it.
AdminResult = dict[str, Any] | tuple[dict[str, Any], bytes]
AdminOp = Callable[[BlockManager, dict[str, Any], "bytes | None"], Awaitable[AdminResult]]

#: Most resync errors returned by one ``errors`` request (each entry is ~150 bytes).
MAX_ERRORS_PAGE: Final = 200
#: Most references returned by one ``ref_list`` request (an owner is up to 128 bytes,
#: shown twice: as text and in hex).
MAX_REFS_PAGE: Final = 100
#: The name of the reference anti-entropy worker in ``workers()``.
REF_SYNC_WORKER: Final = "ref-sync"
#: Long-running operations that ``repair`` / ``rebalance`` start and ``operation`` reports.
BACKGROUND_OPERATIONS: Final = ("repair", "rebalance", "refcounts")


@dataclass(frozen=True)
class _OpSpec:
    fn: AdminOp
    accepts_body: bool


OPS: dict[str, _OpSpec] = {}


def op(name: str, *, body: bool = False) -> Callable[[AdminOp], AdminOp]:
    """Register an admin op; ``body=True`` if it takes a request body."""

    def register(fn: AdminOp) -> AdminOp:
        OPS[name] = _OpSpec(fn, body)
        return fn

    return register


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
# Argument parsing and reply shaping


def _hash_arg(request: dict[str, Any], key: str = "hash") -> Hash:
    value = request.get(key)
    if isinstance(value, bytes) and len(value) == 32:
        return Hash(value)
    if isinstance(value, str):
        try:
            return Hash.from_hex(value)
        except ValueError:
            pass
    raise ValueError(f"{key!r} must be a block hash: 64 hex digits, got {value!r}")


def _int_arg(request: dict[str, Any], key: str, default: int, *, low: int, high: int) -> int:
    value = request.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{key!r} must be an integer in {low}..{high}, got {value!r}")
    return value


def _owner_arg(request: dict[str, Any]) -> bytes:
    value = request.get("owner")
    if isinstance(value, str):
        value = value.encode()
    if not isinstance(value, bytes) or not 1 <= len(value) <= 128:
        raise ValueError(f"'owner' must be 1..128 bytes (or text), got {value!r}")
    return value


def owner_view(owner: bytes) -> dict[str, Any]:
    """An owner as text (None when it is not UTF-8) and in hex."""
    try:
        text: str | None = owner.decode()
    except UnicodeDecodeError:
        text = None
    return {"owner": text, "owner_hex": owner.hex()}


def reference_rows(bm: BlockManager) -> int | None:
    """Rows of this node's reference table, tombstones included (None on a gateway)."""
    return None if bm.is_gateway else bm.ref_len()


def as_plain(value: Any) -> Any:
    """Dataclasses, hashes and enums into CBOR-friendly values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: as_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Hash):
        return value.hex()
    if isinstance(value, dict):
        return {str(k): as_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [as_plain(v) for v in value]
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    return value


async def data_dir_usage(bm: BlockManager) -> list[dict[str, Any]]:
    """Total and free bytes of the filesystem of each data directory, as plain maps."""
    out: list[dict[str, Any]] = []
    for usage in await bm.data_dir_usage():
        entry: dict[str, Any] = {"path": str(usage.path), "read_only": usage.read_only}
        if usage.error is not None:
            entry["error"] = usage.error
        else:
            entry.update(total=usage.total, free=usage.free)
        out.append(entry)
    return out


# ---------------------------------------------------------------------------------------
# Background operations (repair, rebalance) and the scrub, as ``operation`` reports them

#: The scrub's state in an ``operation`` view (the repair and rebalance states are
#: ``OperationState`` values: idle, running, done, failed).
_SCRUB_VIEW_STATE: Final = {
    ScrubState.RUNNING: "running",
    ScrubState.PAUSED: "paused",
    ScrubState.FINISHED: "done",
    ScrubState.IDLE: "idle",
}


def _operation_view(bm: BlockManager, name: str) -> dict[str, Any]:
    """Uniform progress record of ``repair``, ``rebalance`` or ``scrub``."""
    now = bm.now_msec()
    if name == "scrub":
        status = bm.scrub_status()
        return {
            "name": "scrub",
            "state": _SCRUB_VIEW_STATE[status.state],
            "progress": status.progress,
            "info": f"{status.blocks_checked} blocks verified, "
            f"{status.corruptions_found} corruptions found",
            "report": as_plain(status),
            "error": None,
            "started_at": None,
            "finished_at": status.last_completed,
            "now": now,
        }
    if name not in BACKGROUND_OPERATIONS:
        raise ValueError(f"unknown operation {name!r}: scrub, repair, rebalance or refcounts")
    view: dict[str, Any] = as_plain(bm.operation_status(name))
    if view["state"] == "running" and view["progress"] is None:
        view["progress"] = 0.0
    if view["state"] != "running":
        view["info"] = None
    view["now"] = now
    return view


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
        "operations": {name: _operation_view(bm, name) for name in BACKGROUND_OPERATIONS},
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
    limit = _int_arg(request, "limit", MAX_ERRORS_PAGE, low=1, high=MAX_ERRORS_PAGE)
    after = _hash_arg(request, "after").hex() if request.get("after") is not None else ""
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
    had_error = bm.retry_now(_hash_arg(request))
    return {"queued": 1, "had_error": had_error}


@op("purge")
async def _purge(bm: BlockManager, request: dict[str, Any], body: bytes | None) -> AdminResult:
    h = _hash_arg(request)
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
    h = _hash_arg(request)
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
    return {"operation": _operation_view(bm, "repair")}


@op("rebalance")
async def _rebalance(bm: BlockManager, request: dict[str, Any], body: bytes | None) -> AdminResult:
    bm.start_operation("rebalance")
    return {"operation": _operation_view(bm, "rebalance")}


@op("operation")
async def _operation(bm: BlockManager, request: dict[str, Any], body: bytes | None) -> AdminResult:
    name = request.get("name")
    if not isinstance(name, str):
        raise ValueError("operation needs 'name': scrub, repair or rebalance")
    return {"operation": _operation_view(bm, name)}


# ---------------------------------------------------------------------------------------
# Cluster references


async def _ref_update(bm: BlockManager, request: dict[str, Any], *, deleted: bool) -> AdminResult:
    h = _hash_arg(request)
    owner = _owner_arg(request)
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
    h = _hash_arg(request)
    limit = _int_arg(request, "limit", MAX_REFS_PAGE, low=1, high=MAX_REFS_PAGE)
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


# ---------------------------------------------------------------------------------------
# Layout changes


@op("layout_show")
async def _layout_show(
    bm: BlockManager, request: dict[str, Any], body: bytes | None
) -> AdminResult:
    """The current version (a page of its roles, ``after`` a node id), the live
    versions, and with the first page the staged changes and what applying them makes."""
    limit = _int_arg(
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
    limit = _int_arg(
        request, "limit", layout_admin.MAX_NODES_PAGE, low=1, high=layout_admin.MAX_NODES_PAGE
    )
    return layout_admin.status_view(bm, request, limit)


@op("layout_history")
async def _layout_history(
    bm: BlockManager, request: dict[str, Any], body: bytes | None
) -> AdminResult:
    """A page of the layout versions this node has seen, oldest first (``start``)."""
    start = _int_arg(request, "start", 0, low=0, high=2**31)
    limit = _int_arg(
        request,
        "limit",
        layout_admin.MAX_RECORDS_PAGE,
        low=1,
        high=layout_admin.MAX_RECORDS_PAGE,
    )
    return layout_admin.history_view(bm, start, limit)


# The ops of operators' reports and maintenance register themselves on import.
from . import admin_reports as _admin_reports  # noqa: E402, F401

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
