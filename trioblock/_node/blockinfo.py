"""``block info``: everything one storage node holds about one block, and the same
gathered from every storage node of the block.

- :func:`local_block_info` reads this node's rows (count, references, resync queue and
  error) on the Trio thread (short indexed reads) and looks for every local copy in one
  worker-thread trip. At most :data:`MAX_LISTED_REFERENCES` references are listed (in
  owner order); the alive and removed totals count them all.
- :func:`cluster_block_info` asks every storage node of the block in any live layout
  version at once (``NodeReportQuery``); a node that cannot be asked is reported with
  the reason instead of its view.
- A view travels as a map of plain data; :meth:`BlockInfo.from_map` checks a peer's
  map and raises ``ProtocolError`` when it is malformed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import trio

from .._core.hashing import HASH_LEN, Hash
from .._core.refcrdt import Reference
from .._storage import all_copies, queued_times, run_blocking
from ..errors import ProtocolError, TrioblockError
from .context import NodeContext, PeerContext

T = TypeVar("T")

#: Most references a :class:`BlockInfo` lists (a reply fits in one message frame).
MAX_LISTED_REFERENCES = 100


@dataclass(frozen=True)
class LocalCopy:
    """One copy of the block in a data directory: its directory, path, encoding
    (``"compressed"`` or ``"plain"``) and size in bytes."""

    directory: str
    path: str
    encoding: str
    size: int


@dataclass(frozen=True)
class BlockInfo:
    """What one storage node holds about a block (``bm.block_info(h)``).

    ``state`` is ``"present"`` (``refcount`` > 0), ``"deletable"`` (count 0, deletable
    at ``deletable_at``) or ``"absent"`` (no row). ``references`` lists the first 100
    (owner order; tombstones included), ``references_alive`` / ``references_removed``
    count them all. ``storage_nodes`` are the block's nodes in the current layout
    version. ``queued`` are the times its resync checks are due; ``errors`` (0: none),
    ``last_try`` and ``next_try`` its resync back-off. Times are node msec; ``now`` is
    the node's clock when it answered.
    """

    hash: Hash
    node_id: str
    now: int
    refcount: int
    state: str
    deletable_at: int | None
    references_alive: int
    references_removed: int
    references: list[Reference]
    copies: list[LocalCopy]
    storage_nodes: list[str]
    is_storage_node: bool
    queued: list[int]
    errors: int
    last_try: int | None
    next_try: int | None

    def to_map(self) -> dict[str, Any]:
        """The view as plain data (the wire form)."""
        return {
            "hash": bytes(self.hash),
            "node_id": self.node_id,
            "now": self.now,
            "refcount": self.refcount,
            "state": self.state,
            "deletable_at": self.deletable_at,
            "references_alive": self.references_alive,
            "references_removed": self.references_removed,
            "references": [[r.owner, r.deleted, r.updated_msec] for r in self.references],
            "copies": [[c.directory, c.path, c.encoding, c.size] for c in self.copies],
            "storage_nodes": list(self.storage_nodes),
            "is_storage_node": self.is_storage_node,
            "queued": list(self.queued),
            "errors": self.errors,
            "last_try": self.last_try,
            "next_try": self.next_try,
        }

    @classmethod
    def from_map(
        cls, m: Mapping[str, Any], *, hash: bytes | None = None, node_id: str | None = None
    ) -> BlockInfo:
        """Check a peer's view; ``ProtocolError`` when anything is off, or when it is
        not about ``hash`` or not from ``node_id`` (when given: what was asked)."""
        if not isinstance(m, Mapping):
            raise ProtocolError(f"block info: a map expected, got {type(m).__name__}")
        try:
            h = _typed(m, "hash", bytes)
            if len(h) != HASH_LEN:
                raise ProtocolError("block info: a hash of 32 bytes expected")
            if hash is not None and h != bytes(hash):
                raise ProtocolError(f"block info about {h.hex()}, not {bytes(hash).hex()}")
            node = _typed(m, "node_id", str)
            if node_id is not None and node != node_id:
                raise ProtocolError(f"block info from {node!r}, not {node_id!r}")
            refs = [
                Reference(_check(r[0], bytes), _check(r[1], bool), _check(r[2], int))
                for r in map(_row(3, "reference"), _typed(m, "references", list))
            ]
            copies = [
                LocalCopy(
                    _check(c[0], str), _check(c[1], str), _check(c[2], str), _check(c[3], int)
                )
                for c in map(_row(4, "copy"), _typed(m, "copies", list))
            ]
            return cls(
                hash=Hash(h),
                node_id=node,
                now=_typed(m, "now", int),
                refcount=_typed(m, "refcount", int),
                state=_typed(m, "state", str),
                deletable_at=_optional(m, "deletable_at", int),
                references_alive=_typed(m, "references_alive", int),
                references_removed=_typed(m, "references_removed", int),
                references=refs,
                copies=copies,
                storage_nodes=[_check(n, str) for n in _typed(m, "storage_nodes", list)],
                is_storage_node=_typed(m, "is_storage_node", bool),
                queued=[_check(t, int) for t in _typed(m, "queued", list)],
                errors=_typed(m, "errors", int),
                last_try=_optional(m, "last_try", int),
                next_try=_optional(m, "next_try", int),
            )
        except (IndexError, TypeError) as exc:
            raise ProtocolError(f"malformed block info: {exc}") from None


def _check(value: Any, kind: type[T]) -> T:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ProtocolError(f"block info: {kind.__name__} expected, got {type(value).__name__}")
    return value


def _row(length: int, what: str) -> Callable[[Any], list[Any]]:
    """A check that a value is a list of ``length`` items (one ``what`` of a reply)."""

    def check(value: Any) -> list[Any]:
        if not isinstance(value, list) or len(value) != length:
            raise ProtocolError(f"block info: a {what} is a list of {length} items")
        return value

    return check


def _typed(m: Mapping[str, Any], key: str, kind: type[T]) -> T:
    if key not in m:
        raise ProtocolError(f"block info lacks {key!r}")
    return _check(m[key], kind)


def _optional(m: Mapping[str, Any], key: str, kind: type[T]) -> T | None:
    value = m.get(key)
    return None if value is None else _check(value, kind)


def _reference_rows(ctx: NodeContext, hash: Hash) -> tuple[list[Reference], int, int]:
    """The first references of ``hash`` and the alive / removed totals."""
    alive, rows = ctx.db.refs.count_alive(hash)
    refs = ctx.db.refs.first_of(hash, MAX_LISTED_REFERENCES)
    return refs, alive, rows - alive


async def local_block_info(ctx: NodeContext, hash: Hash) -> BlockInfo:
    """This node's view of ``hash``."""
    store = ctx.store
    roots = store.layout.search_roots(hash)
    found = await run_blocking(all_copies, store.disk, roots, hash, limiter=store.limiter)
    rc = ctx.db.get_rc(hash)
    refs, alive, removed = _reference_rows(ctx, hash)
    error = ctx.db.get_error(hash)
    state = "present" if rc.is_nonzero else ("absent" if rc.is_absent else "deletable")
    return BlockInfo(
        hash=hash,
        node_id=ctx.node_id,
        now=ctx.clock.now_msec(),
        refcount=rc.count,
        state=state,
        deletable_at=rc.deletable_at,
        references_alive=alive,
        references_removed=removed,
        references=refs,
        copies=[LocalCopy(root, str(loc.path), loc.header.value, loc.size) for root, loc in found],
        storage_nodes=list(ctx.layout.storage_nodes(hash)),
        is_storage_node=ctx.is_storage_node(hash),
        queued=queued_times(ctx.db, hash),
        errors=0 if error is None else error.errors,
        last_try=None if error is None else error.last_try,
        next_try=None if error is None else error.next_try(ctx.resync_retry_delay_msec),
    )


def block_nodes(ctx: PeerContext, hash: Hash) -> list[str]:
    """Every node a live layout version stores ``hash`` on: the current version's
    first, in its order."""
    order = list(ctx.layout.storage_nodes(hash))
    for older in reversed(ctx.live_layouts[:-1]):
        order.extend(older.storage_nodes(hash))
    return list(dict.fromkeys(order))


async def cluster_block_info(
    ctx: PeerContext, local: NodeContext | None, hash: Hash
) -> dict[str, BlockInfo | str]:
    """Each storage node's view of ``hash`` (or why it could not be asked), by node id."""
    nodes = block_nodes(ctx, hash)
    out: dict[str, BlockInfo | str] = {}

    async def ask(node: str) -> None:
        try:
            if node == ctx.node_id and local is not None:
                out[node] = await local_block_info(local, hash)
                return
            if ctx.rpc is None:
                out[node] = "no transport: peers cannot be asked"
                return
            reply = await ctx.rpc.node_report(node, "block", hash)
            out[node] = BlockInfo.from_map(reply, hash=hash, node_id=node)
        except TrioblockError as exc:
            out[node] = str(exc)

    async with trio.open_nursery() as nursery:
        for node in nodes:
            nursery.start_soon(ask, node)
    return {node: out[node] for node in nodes}


__all__ = [
    "MAX_LISTED_REFERENCES",
    "BlockInfo",
    "LocalCopy",
    "block_nodes",
    "cluster_block_info",
    "local_block_info",
]
