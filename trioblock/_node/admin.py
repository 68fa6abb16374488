"""Operator requests arriving over the authenticated transport (``Admin`` messages).

The CLI sends ``{"op": NAME, ...}`` maps; each op maps to one ``BlockManager`` member and
answers with a CBOR-friendly map. An unknown op or a bad argument is a ``ValueError``
(reported to the CLI as a refused request); nothing here can stop the node.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from .._core.hashing import Hash
from .._storage.offload import run_blocking

if TYPE_CHECKING:
    from .manager import BlockManager

AdminOp = Callable[["BlockManager", dict[str, Any]], Awaitable[dict[str, Any]]]
OPS: dict[str, AdminOp] = {}


def op(name: str) -> Callable[[AdminOp], AdminOp]:
    def register(fn: AdminOp) -> AdminOp:
        OPS[name] = fn
        return fn

    return register


def _hash_arg(request: dict[str, Any]) -> Hash:
    value = request.get("hash")
    if isinstance(value, bytes) and len(value) == 32:
        return Hash(value)
    if isinstance(value, str):
        return Hash.from_hex(value)
    raise ValueError("request needs 'hash': 64 hex digits or 32 bytes")


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
    if hasattr(value, "value") and type(value).__module__.startswith("trioblock"):
        return value.value
    return value


async def handle_admin(bm: BlockManager, request: dict[str, Any]) -> dict[str, Any]:
    name = request.get("op")
    if not isinstance(name, str) or name not in OPS:
        raise ValueError(f"unknown admin op {name!r}; known: {', '.join(sorted(OPS))}")
    return await OPS[name](bm, request)


def _disk_usage(paths: list[str]) -> list[dict[str, Any]]:
    out = []
    for p in paths:
        try:
            usage = shutil.disk_usage(p)
            out.append({"path": p, "total": usage.total, "free": usage.free})
        except OSError as exc:
            out.append({"path": p, "error": str(exc)})
    return out


@op("status")
async def _status(bm: BlockManager, request: dict[str, Any]) -> dict[str, Any]:
    dirs = [str(p) for p in bm.store.layout.dirs]
    usage = await run_blocking(_disk_usage, dirs, limiter=bm.cpu_limiter)
    status: dict[str, Any] = {
        "node_id": bm.node_id,
        "uptime": round(time.monotonic() - bm.opened_monotonic, 3),
        "rc_len": bm.rc_len(),
        "resync_queue_len": bm.resync_queue_len(),
        "resync_errors_len": bm.resync_errors_len(),
        "layout": {
            "nodes": list(bm.layout.nodes),
            "replication_factor": bm.layout.replication_factor,
            "write_quorum": bm.layout.write_quorum,
        },
        "data_dirs": usage,
        "compression_level": bm.config.compression_level,
        "metrics": bm.metrics.counters(),
    }
    scrub_status = getattr(bm, "scrub_status", None)
    if scrub_status is not None:
        status["scrub"] = as_plain(scrub_status())
    return status


@op("workers")
async def _workers(bm: BlockManager, request: dict[str, Any]) -> dict[str, Any]:
    return {"workers": as_plain(bm.workers())}


@op("errors")
async def _errors(bm: BlockManager, request: dict[str, Any]) -> dict[str, Any]:
    return {"errors": as_plain(bm.list_resync_errors()), "now": bm.clock.now_msec()}


@op("retry_now")
async def _retry_now(bm: BlockManager, request: dict[str, Any]) -> dict[str, Any]:
    if request.get("all"):
        return {"queued": bm.retry_all_now().value}
    return {"queued": 1 if bm.retry_now(_hash_arg(request)).value else 0}


@op("purge")
async def _purge(bm: BlockManager, request: dict[str, Any]) -> dict[str, Any]:
    return {"removed_copies": bm.purge(_hash_arg(request)).value}


@op("set_resync")
async def _set_resync(bm: BlockManager, request: dict[str, Any]) -> dict[str, Any]:
    if "workers" in request:
        bm.set_resync_workers(int(request["workers"]))
    if "tranquility" in request:
        bm.set_resync_tranquility(int(request["tranquility"]))
    return {"workers": bm.resync.n_workers, "tranquility": bm.resync.tranquility}


@op("put")
async def _put(bm: BlockManager, request: dict[str, Any]) -> dict[str, Any]:
    data = request.get("data")
    if not isinstance(data, bytes):
        raise ValueError("request needs 'data' (bytes)")
    h = await bm.put_block(data, compress=bool(request.get("compress", True)))
    if request.get("incref"):
        bm.incref(h)
    return {"hash": h.hex(), "size": len(data)}


@op("get")
async def _get(bm: BlockManager, request: dict[str, Any]) -> dict[str, Any]:
    return {"data": await bm.get_block(_hash_arg(request))}


@op("metrics")
async def _metrics(bm: BlockManager, request: dict[str, Any]) -> dict[str, Any]:
    return {
        "counters": bm.metrics.counters(),
        "durations": as_plain(bm.metrics.durations()),
    }
