"""A node with two data directories on a ``SimulatedDisk``, shared by the tests of
directory health and of copies outside a block's primary directory."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trioblock
from trioblock import DataDir
from trioblock.testing import SimulatedDisk


def blocks(n: int, size: int = 3000, seed: int = 0) -> list[bytes]:
    """``n`` incompressible blocks."""
    return [random.Random(seed * 1000 + i).randbytes(size) for i in range(n)]


@asynccontextmanager
async def two_dir_node(
    tmp_path: Path, no_livelock: Callable[[], Any], **overrides: Any
) -> AsyncIterator[tuple[trioblock.BlockManager, SimulatedDisk, str, str]]:
    """The node, its disk and its two directories ``a`` and ``b`` (equal capacities)."""
    a, b = tmp_path / "a", tmp_path / "b"
    disk = SimulatedDisk(seed=1)
    config = trioblock.Config(
        node_id="n1",
        metadata_dir=tmp_path / "meta",
        data_dir=[DataDir(a, capacity=1), DataDir(b, capacity=1)],
        disk=disk,
        **overrides,
    )
    with no_livelock():
        async with trioblock.open_block_manager(config) as bm:
            yield bm, disk, str(a), str(b)
