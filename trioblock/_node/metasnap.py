"""Snapshots of the node's metadata database: on demand and, when configured, periodic.

- ``take()`` copies the SQLite file with the online backup API in a worker thread (see
  ``_storage/snapshots.py``): the node keeps working meanwhile. Two requests at once
  take their snapshots one after the other. ``metadata_snapshots_kept`` newest are kept.
- With ``metadata_auto_snapshot_interval`` set, the node takes one every interval (the
  first one an interval after it opens). A failed automatic snapshot is logged and
  tried again at the next interval: it never stops the node.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import trio

from .._storage import (
    DB_NAME,
    RestoreResult,
    SnapshotInfo,
    list_snapshots,
    restore_snapshot_sync,
    run_blocking,
    take_snapshot_sync,
)
from ..errors import DatabaseError
from .context import NodeContext

log = logging.getLogger("trioblock.node")


class MetadataSnapshots:
    """Takes and lists the snapshots of one node's metadata database."""

    def __init__(self, ctx: NodeContext) -> None:
        self._ctx = ctx
        self._lock = trio.Lock()
        self.taken = 0

    async def take(self) -> SnapshotInfo:
        ctx = self._ctx
        async with self._lock:
            info, removed = await run_blocking(
                take_snapshot_sync,
                ctx.db.path,
                ctx.config.metadata_path,
                ctx.config.metadata_snapshots_kept,
                ctx.clock.now_msec(),
            )
        self.taken += 1
        log.info(
            "%s: metadata snapshot %s (%d bytes)%s",
            ctx.node_id,
            info.path,
            info.size,
            f"; removed {len(removed)} older" if removed else "",
        )
        return info

    async def list(self) -> list[SnapshotInfo]:
        return await run_blocking(list_snapshots, self._ctx.config.metadata_path)

    async def run_auto(self) -> None:
        """Take a snapshot every ``metadata_auto_snapshot_interval`` (a task of the node)."""
        interval = self._ctx.config.metadata_auto_snapshot_interval
        if interval is None:
            return
        while True:
            await trio.sleep(interval)
            try:
                await self.take()
            except (DatabaseError, OSError) as exc:
                log.warning(
                    "%s: automatic metadata snapshot failed (tried again in %.0f s): %s",
                    self._ctx.node_id,
                    interval,
                    exc,
                )


def restore_metadata(
    metadata_dir: str | os.PathLike[str], snapshot: str | os.PathLike[str] | None = None
) -> RestoreResult:
    """Put a snapshot of the metadata database in place, with the node **stopped**
    (blocking: call it before opening the node, or from a script).

    ``snapshot`` is a file of ``metadata_dir/snapshots`` (default: the newest). The
    snapshot is checked first; the current ``trioblock.sqlite`` and its ``-wal`` /
    ``-shm`` files, if any, are moved aside (``.damaged-<time>``), never deleted.
    ``DatabaseError`` when there is no snapshot, it is damaged, or a process (a running
    node) holds the database open. Once started, the node catches up from its peers:
    references by anti-entropy, blocks by resync.
    """
    meta = Path(os.path.abspath(metadata_dir))
    chosen = None if snapshot is None else Path(os.path.abspath(snapshot))
    result = restore_snapshot_sync(meta / DB_NAME, meta, chosen, int(time.time() * 1000))
    log.info(
        "metadata database %s restored from snapshot %s%s",
        result.database,
        result.snapshot,
        f" (replaced files moved aside: {', '.join(map(str, result.moved_aside))})"
        if result.moved_aside
        else "",
    )
    return result


__all__ = ["MetadataSnapshots", "RestoreResult", "SnapshotInfo", "restore_metadata"]
