"""The data directories as the node shows them: size, free space and health; the
background task that notices when a full or failing directory works again.

Health (``_core.dirhealth``, kept by the store's ``DirHealthBook``): ``ok``, ``full`` or
``failing``. :func:`watch_data_dirs` probes every directory that is not ok when its
time comes (:data:`WATCH_TICK` seconds apart at most): a full one by its free space, a
failing one by a probe write and fsync, after a back-off.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import trio

from .._core.dirhealth import DataDirState
from .._core.disk import Disk
from .._storage import BlockStore, DirHealthView, run_blocking

#: Seconds between two looks at which directories are due for a probe.
WATCH_TICK = 2.0


@dataclass(frozen=True)
class DataDirUsage:
    """A data directory: its filesystem's size and free space (bytes), and its health.

    ``error`` says why the filesystem could not be read (sizes are then None).
    ``state`` (:class:`DataDirState`): ``OK``, ``FULL`` (out of space: new blocks go
    to the other directories until space is freed) or ``FAILING`` (its disk keeps
    failing: no new blocks until a probe write succeeds or
    :meth:`BlockManager.clear_data_dir`); ``errors``: failed operations in a row since
    the last successful write; ``last_error``: the last one, when there was one.
    """

    path: Path
    read_only: bool
    total: int | None
    free: int | None
    error: str | None = None
    state: DataDirState = DataDirState.OK
    errors: int = 0
    last_error: str | None = None


def disk_usage_sync(
    disk: Disk,
    paths: list[Path],
    read_only: frozenset[Path],
    health: dict[str, DirHealthView] | None = None,
) -> list[DataDirUsage]:
    out: list[DataDirUsage] = []
    for p in paths:
        h = (health or {}).get(str(p))
        state = (h.state, h.errors, h.last_error) if h is not None else (DataDirState.OK, 0, None)
        try:
            usage = disk.statvfs(str(p))
        except OSError as exc:
            out.append(DataDirUsage(p, p in read_only, None, None, str(exc), *state))
        else:
            out.append(DataDirUsage(p, p in read_only, usage.total, usage.free, None, *state))
    return out


async def data_dir_usage(store: BlockStore, limiter: trio.CapacityLimiter) -> list[DataDirUsage]:
    """Size, free space and health of each of ``store``'s data directories."""
    layout = store.layout
    health = {v.path: v for v in store.health.views()}
    return await run_blocking(
        disk_usage_sync,
        store.disk,
        list(layout.dirs),
        layout.read_only_dirs,
        health,
        limiter=limiter,
    )


def clear_data_dir(store: BlockStore, path: str | Path) -> DataDirState:
    """Mark the data directory ``path`` ok (the operator says it works); return the
    state it had. ``ValueError`` when it is not one of the node's data directories."""
    wanted = Path(path)
    for d in store.layout.dirs:
        if d == wanted or str(d) == str(path):
            return store.health.clear(str(d))
    known = ", ".join(str(d) for d in store.layout.dirs)
    raise ValueError(f"{path} is not a data directory of this node (they are: {known})")


async def watch_data_dirs(store: BlockStore) -> None:
    """Probe the directories that are full or failing when they are due, for ever."""
    while True:
        await trio.sleep(WATCH_TICK)
        for root in store.health.due(trio.current_time()):
            await run_blocking(
                store.health.probe_sync, root, trio.current_time(), limiter=store.limiter
            )


__all__ = [
    "WATCH_TICK",
    "DataDirUsage",
    "clear_data_dir",
    "data_dir_usage",
    "disk_usage_sync",
    "watch_data_dirs",
]
