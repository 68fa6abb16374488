"""What comes out of ``open_block_manager`` and ``open_cluster`` when something fails."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

import trioblock
from trioblock import MissingBlockError, TrioblockError, blake2sum
from trioblock._node.nurseries import service_nursery
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


async def test_a_crashed_background_task_is_reported_not_hidden() -> None:
    async def explode() -> None:
        raise RuntimeError("background failure")

    with pytest.raises(TrioblockError, match="node n failed") as info:
        async with service_nursery("node n") as nursery:
            nursery.start_soon(explode)
            await trio.sleep_forever()
    assert isinstance(info.value.__cause__, BaseExceptionGroup)


async def test_an_error_in_the_applications_own_child_task_comes_out_as_itself(
    tmp_path: Path,
) -> None:
    async def fails() -> None:
        raise ValueError("the application's own")

    with pytest.raises(BaseExceptionGroup) as info:
        async with trioblock.open_block_manager(_config(tmp_path)), trio.open_nursery() as app:
            app.start_soon(fails)
    # The application's own nursery's group, not a TrioblockError around it.
    assert info.group_contains(ValueError, match="the application's own")
    assert not isinstance(info.value, TrioblockError)
    assert info.value.split(ValueError)[1] is None


async def test_an_error_in_a_child_task_inside_open_cluster_comes_out_as_itself(
    tmp_path: Path, autojump_clock: object
) -> None:
    async def fails() -> None:
        raise KeyError("mine")

    with pytest.raises(BaseExceptionGroup) as info:
        async with open_cluster(tmp_path, n=3), trio.open_nursery() as app:
            app.start_soon(fails)
    assert info.group_contains(KeyError)
    assert info.value.split(KeyError)[1] is None


async def test_keyboard_interrupt_in_an_application_task_is_not_wrapped(
    tmp_path: Path,
) -> None:
    async def interrupted() -> None:
        raise KeyboardInterrupt

    with pytest.raises(BaseExceptionGroup) as info:
        async with trioblock.open_block_manager(_config(tmp_path)) as bm:
            assert bm.node_id == "n"
            async with trio.open_nursery() as app:
                app.start_soon(interrupted)
    assert not isinstance(info.value, TrioblockError)
    assert info.value.split(KeyboardInterrupt)[1] is None


async def test_keyboard_interrupt_in_a_node_task_comes_out_as_keyboard_interrupt() -> None:
    async def interrupted() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        async with service_nursery("node n") as nursery:
            nursery.start_soon(interrupted)
            await trio.sleep_forever()
