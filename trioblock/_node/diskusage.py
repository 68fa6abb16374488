"""Size and free space of the filesystems holding a node's data directories."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .._core.disk import Disk


@dataclass(frozen=True)
class DataDirUsage:
    """A data directory and its filesystem's size and free space (bytes).

    ``error`` says why the filesystem could not be read (sizes are then None).
    """

    path: Path
    read_only: bool
    total: int | None
    free: int | None
    error: str | None = None


def disk_usage_sync(
    disk: Disk, paths: list[Path], read_only: frozenset[Path]
) -> list[DataDirUsage]:
    out: list[DataDirUsage] = []
    for p in paths:
        try:
            usage = disk.statvfs(str(p))
        except OSError as exc:
            out.append(DataDirUsage(p, p in read_only, None, None, str(exc)))
        else:
            out.append(DataDirUsage(p, p in read_only, usage.total, usage.free))
    return out


__all__ = ["DataDirUsage", "disk_usage_sync"]
