"""A node's data directories when they fill up or keep failing (ok / full / failing),
through the public API on a ``SimulatedDisk``, in virtual time."""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path
from typing import Any

import pytest
import trio
from two_dir_kit import blocks, two_dir_node

import trioblock
from trioblock import DataDirState, DiskError, DiskFullError
from trioblock.testing import open_cluster

#: The most seconds a full or failing directory waits for its first probe.
FIRST_PROBE = 15


async def states(bm: trioblock.BlockManager) -> dict[str, DataDirState]:
    return {str(u.path): u.state for u in await bm.data_dir_usage()}


async def where(bm: trioblock.BlockManager, h: bytes) -> str:
    path = await bm.local_block_path(h)
    assert path is not None
    return str(path.parent.parent.parent)


def state_lines(caplog: pytest.LogCaptureFixture, words: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if words in r.getMessage()]


async def test_a_full_directory_sends_new_blocks_to_the_other_one_where_reads_find_them(
    tmp_path: Path, autojump_clock: object, no_livelock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "trioblock")
    async with two_dir_node(tmp_path, no_livelock, max_block_size=4096) as (bm, disk, a, b):
        disk.set_capacity(7000, root=a)  # two blocks fit in a
        datas = blocks(12)
        hashes = [await bm.put_block(d) for d in datas]
        places = [await where(bm, h) for h in hashes]
        assert places.count(a) == 2  # a took what fit, b the rest
        assert (await states(bm))[a] is DataDirState.FULL
        assert (await states(bm))[b] is DataDirState.OK
        for h, d in zip(hashes, datas, strict=True):
            assert await bm.get_block(h) == d  # found wherever they went
        assert [p for p in disk.files() if ".tmp" in p] == []  # partial writes removed
        assert len(state_lines(caplog, f"{a} is full")) == 1  # one line, not one per block
        # The node notices freed space by itself: a deletion in a, then the next probe.
        in_a = [h for h, p in zip(hashes, places, strict=True) if p == a]
        for h in in_a:
            bm.purge(h)
        await trio.sleep(FIRST_PROBE)
        assert (await states(bm))[a] is DataDirState.OK
        assert len(state_lines(caplog, f"{a} is ok again")) == 1
        more = [await bm.put_block(d) for d in blocks(12, seed=1)]
        assert a in [await where(bm, h) for h in more]  # writes to a resume


async def test_a_block_written_to_a_non_primary_directory_is_scrubbed_deleted_and_rebalanced(
    tmp_path: Path, autojump_clock: object, no_livelock: Any
) -> None:
    async with two_dir_node(tmp_path, no_livelock, max_block_size=4096, gc_delay=10) as (
        bm,
        disk,
        a,
        b,
    ):
        disk.set_capacity(0, root=a)
        datas = blocks(10)
        hashes = [await bm.put_block(d) for d in datas]
        assert {await where(bm, h) for h in hashes} == {b}
        spilled = [h for h in hashes if str(bm.data_layout.primary_dir(h)) == a]
        assert spilled  # some have a as primary, yet sit in b
        # Scrub reads them where they are (a rotten one is found there).
        path = await bm.local_block_path(spilled[0])
        assert path is not None
        disk.rot(path)
        await bm.scrub("start")
        await bm.wait_scrub_runs(1)
        assert bm.metrics.corruptions == 1
        # Rebalance leaves them while a is full, then moves them once it has room.
        report = await bm.rebalance()
        assert report.moved == 0 and report.errors >= 1
        disk.set_capacity(None, root=a)
        await trio.sleep(FIRST_PROBE)
        report = await bm.rebalance()
        assert report.moved == len(spilled) - 1  # the rotten one was quarantined
        for h in spilled[1:]:
            assert await where(bm, h) == a
        # GC deletes a block wherever it is.
        hashes.remove(spilled[0])  # (quarantined)
        for h in hashes:
            await bm.add_reference(h, "app")
            await bm.remove_reference(h, "app")
        await trio.sleep(120)
        assert [await bm.has_local_block(h) for h in hashes] == [False] * len(hashes)


async def test_a_node_whose_every_directory_is_full_fails_its_part_with_disk_full_error(
    tmp_path: Path, autojump_clock: object, no_livelock: Any
) -> None:
    async with two_dir_node(tmp_path, no_livelock, max_block_size=4096) as (bm, disk, a, b):
        disk.set_capacity(0)  # a and b share the disk: both full
        data = blocks(1)[0]
        with pytest.raises(DiskFullError) as info:
            await bm.put_block(data)
        assert info.value.directory in (a, b)
        assert set((await states(bm)).values()) == {DataDirState.FULL}
        with pytest.raises(DiskFullError):  # no room: not even tried
            await bm.put_block(data)
        disk.set_capacity(None)
        h = await bm.put_block(data)  # room again: the write goes there at once
        assert await bm.get_block(h) == data


async def test_repeated_write_errors_mark_a_directory_failing_until_a_probe_succeeds(
    tmp_path: Path, autojump_clock: object, no_livelock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "trioblock")
    async with two_dir_node(tmp_path, no_livelock) as (bm, disk, a, b):
        disk.fail("write", root=a, times=None)
        datas = blocks(20)
        hashes = [await bm.put_block(d) for d in datas]  # none fails: b takes them
        assert {await where(bm, h) for h in hashes} == {b}
        usage = {str(u.path): u for u in await bm.data_dir_usage()}
        assert usage[a].state is DataDirState.FAILING
        assert usage[a].errors == 3
        assert usage[a].last_error is not None and "Input/output error" in usage[a].last_error
        assert len(state_lines(caplog, f"{a} is failing")) == 1
        # No new writes go there: only the three that made it failing were tried.
        assert len([x for x in disk.injected if x[0] == "write"]) == 3
        # A probe after the back-off fails while the disk still does...
        await trio.sleep(FIRST_PROBE)
        assert (await states(bm))[a] is DataDirState.FAILING
        disk.clear_faults()
        await trio.sleep(60)  # ...and succeeds once it works (back-off doubled: 20 s)
        assert (await states(bm))[a] is DataDirState.OK
        assert len(state_lines(caplog, f"{a} is ok again")) == 1
        more = [await bm.put_block(d) for d in blocks(12, seed=2)]
        assert a in [await where(bm, h) for h in more]


async def test_an_operator_clears_a_failing_directory(
    tmp_path: Path, autojump_clock: object, no_livelock: Any
) -> None:
    async with two_dir_node(tmp_path, no_livelock) as (bm, disk, a, _b):
        disk.fail("fsync", root=a, times=3)
        for d in blocks(12):
            await bm.put_block(d)
        assert (await states(bm))[a] is DataDirState.FAILING
        assert bm.clear_data_dir(a) is DataDirState.FAILING
        assert (await states(bm))[a] is DataDirState.OK
        more = [await bm.put_block(d) for d in blocks(12, seed=3)]
        assert a in [await where(bm, h) for h in more]
        with pytest.raises(ValueError, match="not a data directory"):
            bm.clear_data_dir(tmp_path / "elsewhere")


async def test_read_errors_count_towards_failing_and_reads_still_try_the_directory(
    tmp_path: Path, autojump_clock: object, no_livelock: Any
) -> None:
    async with two_dir_node(tmp_path, no_livelock) as (bm, disk, a, _b):
        datas = blocks(12)
        hashes = [await bm.put_block(d) for d in datas]
        in_a = [h for h in hashes if await where(bm, h) == a]
        disk.fail("read", root=a, times=3)
        for h in in_a[:3]:
            with pytest.raises(trioblock.MissingBlockError):  # no peer to go to
                await bm.get_block(h)
        assert (await states(bm))[a] is DataDirState.FAILING
        assert bm.metrics.read_errors == 3
        assert await bm.get_block(in_a[0]) == datas[hashes.index(in_a[0])]  # still read


async def test_a_permission_error_on_read_is_a_failed_source_and_the_peers_answer(
    tmp_path: Path, autojump_clock: object
) -> None:
    async with open_cluster(tmp_path, n=3, write_quorum=3, disk="simulated") as cluster:
        data = b"no permission" * 300
        h = await cluster.nodes["n0"].put_block(data)
        await cluster.nodes["n0"].add_reference(h, "app")
        n1, disk = cluster.nodes["n1"], cluster.disk("n1")
        disk.fail("open", errno=errno.EACCES, times=None)
        assert await n1.get_block(h) == data  # from a peer
        assert n1.metrics.read_errors == 1
        assert n1.resync_queue_len() >= 1  # looked at again by the resync
        async with n1.stream_block(h) as chunks:
            assert b"".join([c async for c in chunks]) == data
        disk.clear_faults()
        disk.fail("stat", errno=errno.EACCES, times=None)
        with pytest.raises(DiskError) as info:  # not a bare PermissionError
            await n1.has_local_block(h)
        assert info.value.errno == errno.EACCES
        assert info.value.directory == str(cluster.data_dir("n1"))
        assert await n1.get_block(h) == data


async def test_a_permission_error_on_write_is_a_disk_error_naming_the_directory(
    tmp_path: Path, autojump_clock: object
) -> None:
    async with open_cluster(tmp_path, n=1, disk="simulated") as cluster:
        n0, disk = cluster.nodes["n0"], cluster.disk("n0")
        disk.fail("open", errno=errno.EACCES, times=None)
        with pytest.raises(DiskError) as info:
            await n0.put_block(b"denied" * 100)
        assert info.value.errno == errno.EACCES
        assert info.value.directory == str(cluster.data_dir("n0"))
        (usage,) = await n0.data_dir_usage()
        assert usage.errors >= 1
        assert [p for p in disk.files() if ".tmp" in p] == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
async def test_a_copy_the_node_may_not_read_on_a_real_disk_is_a_failed_source(
    tmp_path: Path, autojump_clock: object
) -> None:
    async with open_cluster(tmp_path, n=3, write_quorum=3) as cluster:
        data = b"mode 000" * 300
        h = await cluster.nodes["n0"].put_block(data)
        n1 = cluster.nodes["n1"]
        path = await n1.local_block_path(h)
        assert path is not None
        path.chmod(0)
        try:
            assert await n1.get_block(h) == data
            assert n1.metrics.read_errors == 1
        finally:
            path.chmod(0o644)


async def test_one_unreadable_copy_among_good_ones_does_not_make_a_directory_failing(
    tmp_path: Path, autojump_clock: object, no_livelock: Any
) -> None:
    async with two_dir_node(tmp_path, no_livelock) as (bm, disk, a, _b):
        datas = blocks(12)
        hashes = [await bm.put_block(d) for d in datas]
        in_a = [h for h in hashes if await where(bm, h) == a]
        bad = in_a[0]
        disk.fail("read", f"{bad.hex()[:2]}/{bad.hex()[2:4]}/*", root=a, times=None)
        for _ in range(5):
            with pytest.raises(trioblock.MissingBlockError):
                await bm.get_block(bad)
            assert await bm.get_block(in_a[1]) == datas[hashes.index(in_a[1])]
        assert (await states(bm))[a] is DataDirState.OK


async def test_a_directory_that_cannot_even_be_looked_in_does_not_stop_puts(
    tmp_path: Path, autojump_clock: object, no_livelock: Any
) -> None:
    async with two_dir_node(tmp_path, no_livelock) as (bm, disk, a, b):
        for op in ("open", "stat", "list"):
            disk.fail(op, root=a, errno=errno.EACCES, times=None)
        datas = blocks(12)
        hashes = [await bm.put_block(d) for d in datas]
        assert {await where(bm, h) for h in hashes} == {b}
        assert (await states(bm))[a] is DataDirState.FAILING
        for h, d in zip(hashes, datas, strict=True):
            assert await bm.get_block(h) == d
