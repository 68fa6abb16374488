"""The repair worker queues every block of the rc table and of every data directory."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import trio
from ops_kit import block_file, block_hexes, put_blocks

from trioblock import DataDir, blake2sum
from trioblock._node.background.repair import REPAIR_BATCH


async def test_repair_queues_referenced_and_on_disk_blocks(
    open_ops_node: Any, data_dir: Path, autojump_clock: Any
) -> None:
    n_missing = REPAIR_BATCH + 7  # more than one batch of each kind
    n_orphans = REPAIR_BATCH + 3
    # rpc_timeout: an incref's own check comes 2 hours later, long after this test.
    async with open_ops_node(gc_delay=60.0, rpc_timeout=3600.0) as bm:
        kept = await put_blocks(bm, 5)  # referenced and present
        orphans = await put_blocks(bm, n_orphans, prefix=b"orphan", incref=False)
        missing = [blake2sum(b"never stored %d" % i) for i in range(n_missing)]
        for h in missing:
            bm.incref(h)  # referenced, absent
        await trio.sleep(1)
        assert bm.resync_queue_len() == 5 + n_missing  # all due in 2 hours
        assert bm.resync_errors_len() == 0

        report = await bm.repair()
        assert report.rc_blocks == 5 + n_missing
        assert report.disk_blocks == 5 + n_orphans
        assert report.queued_at <= bm.now_msec()

        # Within a second (long before their own check) every missing block was tried.
        await trio.sleep(1)
        assert {e.hash for e in bm.list_resync_errors()} == set(missing)
        # Unreferenced blocks found on disk are garbage-collected once old enough.
        await trio.sleep(120)
        for h in orphans:
            assert not block_file(data_dir, h).exists()
        for h in kept:
            assert await bm.get_block(h)
        (info,) = [w for w in bm.workers() if w.name == "repair"] or [None]
        assert info is None  # done workers leave the list


async def test_repair_walks_every_data_directory(
    open_ops_node: Any, tmp_path: Path, autojump_clock: Any
) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    dirs = [DataDir(a, capacity=1), DataDir(b, capacity=1)]
    async with open_ops_node(data_dir=dirs, gc_delay=60.0) as bm:
        await put_blocks(bm, 40, incref=False)
        on_disk = len(block_hexes(a)) + len(block_hexes(b))
        assert on_disk == 40 and block_hexes(a) and block_hexes(b)
        report = await bm.repair()
        assert report.rc_blocks == 0
        assert report.disk_blocks == 40
        await trio.sleep(200)
        assert block_hexes(a) == block_hexes(b) == []


async def test_concurrent_repairs_share_one_worker(open_ops_node: Any, autojump_clock: Any) -> None:
    async with open_ops_node() as bm:
        await put_blocks(bm, 10)
        reports = []

        async def run() -> None:
            reports.append(await bm.repair())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run)
            nursery.start_soon(run)
        assert len(reports) == 2 and reports[0] is reports[1]
        # A later call starts a new repair.
        again = await bm.repair()
        assert again is not reports[0]
        assert again.disk_blocks == 10


async def test_repair_ignores_non_block_files(
    open_ops_node: Any, data_dir: Path, autojump_clock: Any
) -> None:
    async with open_ops_node() as bm:
        (h,) = await put_blocks(bm, 1)
        path = block_file(data_dir, h)
        (path.parent / "junk.txt").write_text("hello")
        os.link(path, path.with_name(path.name + ".corrupted"))
        report = await bm.repair()
        assert report.disk_blocks == 1
