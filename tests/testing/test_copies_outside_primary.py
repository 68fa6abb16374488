"""Copies of a block outside its primary directory (spilled there when the primary was
full or failing): purge, ``block_info`` and GC find every one, through the public API
on a ``SimulatedDisk``, in virtual time."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import trio
from two_dir_kit import blocks, two_dir_node

import trioblock
from trioblock import DataDirState
from trioblock.testing import SimulatedDisk


async def spilled_block(bm: trioblock.BlockManager, disk: SimulatedDisk, a: str) -> bytes:
    """A block whose primary is ``a`` but whose only copy went to the other directory."""
    disk.set_capacity(0, root=a)
    hashes = [await bm.put_block(d) for d in blocks(10)]
    spilled = [h for h in hashes if str(bm.data_layout.primary_dir(h)) == a]
    assert spilled
    return spilled[0]


async def copy_dirs(bm: trioblock.BlockManager, h: bytes) -> list[str]:
    info = await bm.block_info(h)
    return sorted(c.directory for c in info.copies)


async def test_purge_removes_a_copy_outside_the_blocks_primary_directory(
    tmp_path: Path, autojump_clock: object, no_livelock: Any
) -> None:
    async with two_dir_node(tmp_path, no_livelock, max_block_size=4096) as (bm, disk, a, _b):
        h = await spilled_block(bm, disk, a)
        assert await bm.local_block_path(h) is not None
        assert bm.purge(h) == 1
        assert await bm.local_block_path(h) is None


async def test_block_info_lists_a_copy_outside_the_blocks_primary_directory(
    tmp_path: Path, autojump_clock: object, no_livelock: Any
) -> None:
    async with two_dir_node(tmp_path, no_livelock, max_block_size=4096) as (bm, disk, a, b):
        h = await spilled_block(bm, disk, a)
        assert await copy_dirs(bm, h) == [b]


async def test_gc_deletes_both_copies_of_a_block_rewritten_while_its_directory_failed(
    tmp_path: Path, autojump_clock: object, no_livelock: Any
) -> None:
    async with two_dir_node(tmp_path, no_livelock, max_block_size=4096, gc_delay=10) as (
        bm,
        disk,
        a,
        b,
    ):
        datas = blocks(12)
        hashes = [await bm.put_block(d) for d in datas]
        i = next(i for i, h in enumerate(hashes) if str(bm.data_layout.primary_dir(h)) == a)
        h = hashes[i]
        assert await copy_dirs(bm, h) == [a]
        disk.fail("fsync", root=a, times=3)
        for d in blocks(12, seed=1):
            await bm.put_block(d)
        assert {str(u.path): u.state for u in await bm.data_dir_usage()}[a] is DataDirState.FAILING
        await bm.put_block(datas[i])  # the copy in a failing directory counts for nothing
        assert await copy_dirs(bm, h) == [a, b]
        bm.clear_data_dir(a)
        await bm.add_reference(h, "app")
        await bm.remove_reference(h, "app")
        await trio.sleep(30)  # gc_delay, then one deletion pass (not two, 40 s apart)
        assert await copy_dirs(bm, h) == []
        assert await bm.local_block_path(h) is None


async def test_a_put_over_an_unreadable_copy_succeeds_and_counts_against_its_directory(
    tmp_path: Path, autojump_clock: object, no_livelock: Any
) -> None:
    async with two_dir_node(tmp_path, no_livelock, max_block_size=4096) as (bm, disk, _a, _b):
        data = blocks(1)[0]
        h = await bm.put_block(data)
        path = await bm.local_block_path(h)
        assert path is not None
        root = path.parent.parent.parent
        disk.fail("read", str(path.relative_to(root)), times=None, root=root)  # a bad sector
        for errors in (1, 2, 3):
            assert await bm.put_block(data) == h  # no DiskError: a fresh copy elsewhere
            usage = {u.path: u for u in await bm.data_dir_usage()}
            assert usage[root].errors == errors  # each unreadable look counted
            assert usage[root].last_error is not None
            assert "Input/output error" in usage[root].last_error
        assert usage[root].state is DataDirState.FAILING
        disk.clear_faults()
        assert sorted(map(Path, await copy_dirs(bm, h))) == sorted(tmp_path / d for d in "ab")
        assert await bm.get_block(h) == data


async def test_a_rebalance_that_exceeds_a_quota_marks_the_directory_full(
    tmp_path: Path, autojump_clock: object, no_livelock: Any
) -> None:
    async with two_dir_node(tmp_path, no_livelock, max_block_size=4096) as (bm, disk, a, _b):
        await spilled_block(bm, disk, a)
        disk.set_capacity(None, root=a)
        bm.clear_data_dir(a)
        disk.fail("write", root=a, errno=errno.EDQUOT, times=None)  # over the user's quota
        report = await bm.rebalance()
        assert report.moved == 0 and report.errors >= 1
        states = {str(u.path): u.state for u in await bm.data_dir_usage()}
        assert states[a] is DataDirState.FULL  # as for ENOSPC: not failing, not ok
