"""``BlockManager.stored()``: block copies and bytes held, kept without walking per call."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
import trio
import trio.testing

import trioblock
from trioblock import CorruptBlockError, StoredBlocks

BLOCK_NAME_LEN = 64


def on_disk(data_dir: Path) -> tuple[int, int]:
    """Copies (regular files named like a block) and their bytes, by walking the tree."""
    blocks = size = 0
    for path in data_dir.rglob("*"):
        name = path.name.removesuffix(".zst")
        if len(name) == BLOCK_NAME_LEN and path.is_file() and not path.is_symlink():
            blocks += 1
            size += path.stat().st_size
    return blocks, size


async def counted(bm: trioblock.BlockManager) -> StoredBlocks:
    """The figures once the start-up count went through every directory."""
    while not (stored := bm.stored()).exact:  # noqa: ASYNC110 (a figure, no event)
        await trio.sleep(0.01)
    return stored


async def test_counts_puts_from_an_empty_node(open_node, data_dir, autojump_clock) -> None:
    async with open_node() as bm:
        assert await counted(bm) == StoredBlocks(0, 0, True)
        for i in range(5):
            await bm.put_block(os.urandom(1000 + i))
        await bm.put_block(b"x" * 5000)  # compresses well
        stored = bm.stored()
        assert stored.blocks == 6
        assert (stored.blocks, stored.bytes) == on_disk(data_dir)


async def test_a_re_put_counts_once_and_compressed_replaces_plain(
    open_node, data_dir, autojump_clock
) -> None:
    data = b"plain first, compressed next " * 100
    async with open_node() as bm:
        await counted(bm)
        h = await bm.put_block(data, compress=False)
        assert bm.stored().blocks == 1
        assert bm.stored().bytes == len(data)
        await bm.put_block(data, compress=False)
        assert bm.stored().blocks == 1
        await bm.put_block(data)  # the compressed copy supersedes the plain one
        stored = bm.stored()
        assert stored.blocks == 1
        assert stored.bytes < len(data)
        assert (stored.blocks, stored.bytes) == on_disk(data_dir)
        assert bm.has_local_block
        assert await bm.get_block(h) == data


async def test_deletes_quarantines_and_purges_are_subtracted(
    open_node, data_dir, disk, autojump_clock
) -> None:
    async with open_node(gc_delay=60.0) as bm:
        await counted(bm)
        kept, gone, corrupt, purged = [await bm.put_block(os.urandom(3000)) for _ in range(4)]
        bm.incref(kept)
        assert bm.stored().blocks == 4
        # quarantine: a corrupt copy found by a read leaves the count
        disk.flip_byte(disk.block_file(data_dir, corrupt))
        with pytest.raises(CorruptBlockError):
            await bm.get_block(corrupt)
        assert bm.stored().blocks == 3
        # purge
        bm.purge(purged)
        assert bm.stored().blocks == 2
        # garbage collection of the unreferenced ones after gc_delay
        bm.incref(gone)
        bm.decref(gone)
        await trio.sleep(200.0)
        await trio.testing.wait_all_tasks_blocked()
        assert not await bm.has_local_block(gone)
        stored = bm.stored()
        assert stored.blocks == 1
        assert (stored.blocks, stored.bytes) == on_disk(data_dir)


async def test_a_restart_counts_what_is_on_disk_in_the_background(
    open_node, make_config, data_dir, autojump_clock
) -> None:
    config = make_config()
    async with open_node(config) as bm:
        for _ in range(40):
            await bm.put_block(os.urandom(2000))
        expected = on_disk(data_dir)
    async with open_node(config) as bm:
        first = bm.stored()
        assert not first.exact  # the count has not gone through the directories yet
        stored = await counted(bm)
        assert (stored.blocks, stored.bytes) == expected
        assert stored.exact


async def test_changes_during_the_start_up_count_are_not_lost_nor_doubled(
    open_node, make_config, data_dir, autojump_clock
) -> None:
    """Puts and deletions racing the background count leave it exact (in every order)."""
    config = make_config(gc_delay=1.0)
    rng = random.Random(7)
    async with open_node(config) as bm:
        old = [await bm.put_block(rng.randbytes(1500)) for _ in range(60)]
        for h in old:
            bm.incref(h)
    async with open_node(config) as bm:
        assert not bm.stored().exact

        async def churn() -> None:
            for i, h in enumerate(old):
                await bm.put_block(rng.randbytes(1200 + i))
                if i % 3 == 0:
                    bm.decref(h)  # deleted once gc_delay has passed
                if i % 5 == 0:
                    bm.purge(h)
                await trio.lowlevel.checkpoint()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(churn)
            stored = await counted(bm)
        await trio.sleep(30.0)
        await trio.testing.wait_all_tasks_blocked()
        stored = bm.stored()
        assert stored.exact
        assert (stored.blocks, stored.bytes) == on_disk(data_dir)


async def test_copies_in_two_directories_and_a_rebalance(
    tmp_path, make_config, open_node, autojump_clock
) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    async with open_node(make_config(data_dir=[trioblock.DataDir(a)])) as bm:
        for _ in range(30):
            await bm.put_block(os.urandom(800))
    config = make_config(
        data_dir=[trioblock.DataDir(a, capacity=100), trioblock.DataDir(b, capacity=300)]
    )
    async with open_node(config) as bm:
        before = await counted(bm)
        assert (before.blocks, before.bytes) == on_disk(a)
        await bm.rebalance()
        after = bm.stored()
        disk_a, disk_b = on_disk(a), on_disk(b)
        assert disk_b[0] > 0  # some blocks moved
        assert (after.blocks, after.bytes) == (disk_a[0] + disk_b[0], disk_a[1] + disk_b[1])
        assert after.blocks == before.blocks
