"""The admin ops' helpers: parsing a request's arguments, shaping replies, and the
uniform progress view of the background operations and the scrub."""

from __future__ import annotations

import dataclasses
import enum
from pathlib import Path
from typing import Any, Final

from .._core.hashing import Hash
from .._node import BlockManager, ScrubState

#: Long-running operations that ``repair`` / ``rebalance`` start and ``operation`` reports.
BACKGROUND_OPERATIONS: Final = ("repair", "rebalance", "refcounts")


# ---------------------------------------------------------------------------------------
# Argument parsing and reply shaping


def hash_arg(request: dict[str, Any], key: str = "hash") -> Hash:
    value = request.get(key)
    if isinstance(value, bytes) and len(value) == 32:
        return Hash(value)
    if isinstance(value, str):
        try:
            return Hash.from_hex(value)
        except ValueError:
            pass
    raise ValueError(f"{key!r} must be a block hash: 64 hex digits, got {value!r}")


def int_arg(request: dict[str, Any], key: str, default: int, *, low: int, high: int) -> int:
    value = request.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{key!r} must be an integer in {low}..{high}, got {value!r}")
    return value


def owner_arg(request: dict[str, Any]) -> bytes:
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


# ---------------------------------------------------------------------------------------
# Background operations (repair, rebalance) and the scrub, as ``operation`` reports them

#: The scrub's state in an ``operation`` view (the repair and rebalance states are
#: ``OperationState`` values: idle, running, done, failed).
SCRUB_VIEW_STATE: Final = {
    ScrubState.RUNNING: "running",
    ScrubState.PAUSED: "paused",
    ScrubState.FINISHED: "done",
    ScrubState.IDLE: "idle",
}


def operation_view(bm: BlockManager, name: str) -> dict[str, Any]:
    """Uniform progress record of ``repair``, ``rebalance`` or ``scrub``."""
    now = bm.now_msec()
    if name == "scrub":
        status = bm.scrub_status()
        return {
            "name": "scrub",
            "state": SCRUB_VIEW_STATE[status.state],
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


__all__ = [
    "BACKGROUND_OPERATIONS",
    "SCRUB_VIEW_STATE",
    "as_plain",
    "hash_arg",
    "int_arg",
    "operation_view",
    "owner_arg",
    "owner_view",
    "reference_rows",
]
