"""``stats``: each storage node's counts and free space, and the cluster's usable capacity.

- :func:`local_node_stats` is constant time for the counts (they are kept, not
  counted; the block figures are estimates until the node's start-up count is done,
  see ``BlockManager.stored``) plus one ``statvfs`` per directory in a worker thread.
- :func:`cluster_stats` asks every node of a live layout version at once
  (``NodeReportQuery``); a node that cannot be asked is listed with the reason.
- Usable capacity, as Garage estimates it: a node storing the share ``s`` of the
  partitions fills up when the cluster holds ``free / s`` bytes of distinct data, so
  the cluster can take ``min(free_n / s_n)`` more over the nodes of the current layout
  version (``s_n`` counts ``replication_factor`` copies: the shares add up to it). The
  same for the metadata directories. ``complete`` is False when a node of the current
  version did not answer (the estimate then leaves it out).
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from .._core.assignment import N_PARTITIONS
from .._core.layoutversion import LayoutVersion
from .._core.placement import Layout, StaticLayout
from .._storage import run_blocking
from ..errors import ProtocolError, TrioblockError
from .context import NodeContext, PeerContext
from .diskusage import disk_usage_sync


@dataclass(frozen=True)
class DirSpace:
    """A directory's filesystem: total and free bytes (None, with ``error``, when it
    could not be read); ``read_only`` for a data directory that takes no new blocks."""

    path: str
    total: int | None
    free: int | None
    read_only: bool = False
    error: str | None = None


@dataclass(frozen=True)
class NodeStats:
    """One storage node's figures (``bm.node_stats()``): block copies and their bytes
    (``exact`` False while still an estimate), rows of the reference-count table
    (``rc_rows``) and of the reference table (``references``, tombstones included),
    the resync queue and errors, and its directories' space. ``data_free`` sums the
    free bytes of its writable data directories."""

    node_id: str
    now: int
    blocks: int
    bytes: int
    exact: bool
    rc_rows: int
    references: int
    resync_queue: int
    resync_errors: int
    data_dirs: list[DirSpace]
    metadata_dir: DirSpace

    @property
    def data_free(self) -> int:
        return sum(d.free or 0 for d in self.data_dirs if not d.read_only)

    def to_map(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "now": self.now,
            "blocks": self.blocks,
            "bytes": self.bytes,
            "exact": self.exact,
            "rc_rows": self.rc_rows,
            "references": self.references,
            "resync_queue": self.resync_queue,
            "resync_errors": self.resync_errors,
            "data_dirs": [_space_map(d) for d in self.data_dirs],
            "metadata_dir": _space_map(self.metadata_dir),
        }

    @classmethod
    def from_map(cls, m: Mapping[str, Any]) -> NodeStats:
        """Check a peer's figures; ``ProtocolError`` when anything is off."""
        try:
            ints = {
                k: _int(m[k])
                for k in (
                    "now",
                    "blocks",
                    "bytes",
                    "rc_rows",
                    "references",
                    "resync_queue",
                    "resync_errors",
                )
            }
            node_id, exact = m["node_id"], m["exact"]
            if not isinstance(node_id, str) or not isinstance(exact, bool):
                raise ProtocolError("node stats: malformed node_id or exact")
            dirs = m["data_dirs"]
            if not isinstance(dirs, list):
                raise ProtocolError("node stats: data_dirs must be a list")
            return cls(
                node_id=node_id,
                exact=exact,
                data_dirs=[_space_from(d) for d in dirs],
                metadata_dir=_space_from(m["metadata_dir"]),
                **ints,
            )
        except (KeyError, TypeError) as exc:
            raise ProtocolError(f"malformed node stats: {exc}") from None


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProtocolError(f"node stats: an integer expected, got {value!r}")
    return value


def _space_map(d: DirSpace) -> dict[str, Any]:
    return {
        "path": d.path,
        "total": d.total,
        "free": d.free,
        "read_only": d.read_only,
        "error": d.error,
    }


def _space_from(m: Any) -> DirSpace:
    if not isinstance(m, dict):
        raise ProtocolError("node stats: a directory must be a map")
    path, read_only, error = m.get("path"), m.get("read_only", False), m.get("error")
    if not isinstance(path, str) or not isinstance(read_only, bool):
        raise ProtocolError("node stats: malformed directory")
    if error is not None and not isinstance(error, str):
        raise ProtocolError("node stats: malformed directory error")
    total, free = m.get("total"), m.get("free")
    return DirSpace(
        path,
        None if total is None else _int(total),
        None if free is None else _int(free),
        read_only,
        error,
    )


@dataclass(frozen=True)
class ClusterStats:
    """The cluster's figures (``bm.cluster_stats()``): each node's :class:`NodeStats`,
    the nodes that could not be asked (``unreachable``: node id → why), and the
    estimated bytes of distinct data the cluster can still take, in its data and in
    its metadata directories (None when no node of the current version answered)."""

    replication_factor: int
    nodes: dict[str, NodeStats]
    unreachable: dict[str, str]
    usable_data: int | None
    usable_metadata: int | None
    complete: bool


def _metadata_space(path: Path) -> DirSpace:
    try:
        usage = shutil.disk_usage(path)
    except OSError as exc:
        return DirSpace(str(path), None, None, error=str(exc))
    return DirSpace(str(path), usage.total, usage.free)


async def local_node_stats(ctx: NodeContext) -> NodeStats:
    """This node's figures."""
    store = ctx.store
    layout = store.layout
    usages = await run_blocking(
        disk_usage_sync, store.disk, list(layout.dirs), layout.read_only_dirs, limiter=store.limiter
    )
    meta = await run_blocking(_metadata_space, ctx.config.metadata_path)
    stored = store.stored.figures()
    db = ctx.db
    return NodeStats(
        node_id=ctx.node_id,
        now=ctx.clock.now_msec(),
        blocks=stored.blocks,
        bytes=stored.bytes,
        exact=stored.exact,
        rc_rows=db.rc_len(),
        references=len(db.refs),
        resync_queue=db.resync_queue_len(),
        resync_errors=db.resync_errors_len(),
        data_dirs=[DirSpace(str(u.path), u.total, u.free, u.read_only, u.error) for u in usages],
        metadata_dir=meta,
    )


def partition_share(layout: Layout, node_id: str) -> float:
    """The share of the hash space ``node_id`` stores a copy of (0..1)."""
    version = layout.first_version if isinstance(layout, StaticLayout) else layout
    if isinstance(version, LayoutVersion):
        return len(version.partitions_of(node_id)) / N_PARTITIONS
    nodes = list(layout.nodes)
    return layout.replication_factor / len(nodes) if node_id in nodes else 0.0


def usable(layout: Layout, free: Mapping[str, int]) -> int | None:
    """``min(free_n / share_n)`` over the nodes in ``free`` that store something."""
    bounds = []
    for node, space in free.items():
        share = partition_share(layout, node)
        if share > 0:
            bounds.append(int(space / share))
    return min(bounds) if bounds else None


async def cluster_stats(ctx: PeerContext, local: NodeContext | None) -> ClusterStats:
    """Every live node's figures and the cluster's usable capacity."""
    nodes = ctx.live_nodes()
    answers: dict[str, NodeStats] = {}
    failed: dict[str, str] = {}

    async def ask(node: str) -> None:
        try:
            if node == ctx.node_id and local is not None:
                answers[node] = await local_node_stats(local)
            elif ctx.rpc is None:
                failed[node] = "no transport: peers cannot be asked"
            else:
                answers[node] = NodeStats.from_map(await ctx.rpc.node_report(node, "stats"))
        except TrioblockError as exc:
            failed[node] = str(exc)

    async with trio.open_nursery() as nursery:
        for node in nodes:
            nursery.start_soon(ask, node)
    layout = ctx.layout
    current = [n for n in layout.nodes if n in answers]
    return ClusterStats(
        replication_factor=layout.replication_factor,
        nodes={n: answers[n] for n in nodes if n in answers},
        unreachable={n: failed[n] for n in nodes if n in failed},
        usable_data=usable(layout, {n: answers[n].data_free for n in current}),
        usable_metadata=usable(layout, {n: answers[n].metadata_dir.free or 0 for n in current}),
        complete=len(current) == len(layout.nodes),
    )


__all__ = [
    "ClusterStats",
    "DirSpace",
    "NodeStats",
    "cluster_stats",
    "local_node_stats",
    "partition_share",
    "usable",
]
