"""What comes out of ``open_block_manager`` and ``open_cluster`` when something fails."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

import trioblock
from trioblock import MissingBlockError, TrioblockError, blake2sum
from trioblock.testing import open_cluster


def _config(tmp_path: Path) -> trioblock.Config:
    return trioblock.Config(node_id="n", metadata_dir=tmp_path / "m", data_dir=tmp_path / "d")


async def test_the_callers_own_error_comes_out_unwrapped(tmp_path: Path) -> None:
    with pytest.raises(MissingBlockError):
        async with trioblock.open_block_manager(_config(tmp_path)) as bm:
            await bm.get_block(blake2sum(b"never stored"))


async def test_an_error_in_the_cluster_body_comes_out_unwrapped(
    tmp_path: Path, autojump_clock: object
) -> None:
    with pytest.raises(KeyError):
        async with open_cluster(tmp_path, n=3):
            raise KeyError("mine")


async def test_cancellation_from_outside_still_works(
    tmp_path: Path, autojump_clock: object
) -> None:
    with trio.move_on_after(5) as scope:
        async with trioblock.open_block_manager(_config(tmp_path)):
            await trio.sleep_forever()
    assert scope.cancelled_caught


async def test_a_crashed_background_task_is_reported_not_hidden(tmp_path: Path) -> None:
    async def explode() -> None:
        raise RuntimeError("background failure")

    with pytest.raises(TrioblockError, match="node n failed") as info:
        async with trioblock.open_block_manager(_config(tmp_path)) as bm:
            assert bm._nursery is not None
            bm._nursery.start_soon(explode)
            await trio.sleep_forever()
    assert isinstance(info.value.__cause__, BaseExceptionGroup)
