"""Operator tools on one node: block info, the reference recount, metadata snapshots,
the stats, and a damaged database at start-up — through the public API."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

import trioblock
from trioblock import MetadataCorruptError, blake2sum

A = b"block a " * 300
B = b"block b " * 300
C = b"block c " * 300


async def test_block_info_shows_count_references_copies_and_queue(
    open_ops_node: Callable[..., Any], autojump_clock: Any
) -> None:
    async with open_ops_node() as bm:
        h = await bm.put_block(A)
        await bm.add_reference(h, "snap-1")
        await bm.add_reference(h, "snap-2")
        await bm.remove_reference(h, "snap-1")
        info = await bm.block_info(h)
        assert info.hash == h and info.node_id == bm.node_id
        assert (info.state, info.refcount, info.deletable_at) == ("present", 1, None)
        assert (info.references_alive, info.references_removed) == (1, 1)
        assert [(r.owner, r.deleted) for r in info.references] == [
            (b"snap-1", True),
            (b"snap-2", False),
        ]
        [copy] = info.copies
        assert copy.encoding == "compressed"
        assert copy.size == Path(copy.path).stat().st_size  # noqa: ASYNC240
        assert Path(copy.path).is_relative_to(copy.directory)
        assert info.storage_nodes == [bm.node_id] and info.is_storage_node
        # The reference queued a check of the block (as an incref does).
        assert info.queued and all(t > info.now - 1000 for t in info.queued)
        assert (info.errors, info.last_try, info.next_try) == (0, None, None)

        await bm.remove_reference(h, "snap-2")
        info = await bm.block_info(h)
        assert info.state == "deletable" and info.refcount == 0
        assert info.deletable_at == pytest.approx(info.now + bm.config.gc_delay * 1000, abs=1000)

        unknown = await bm.block_info(blake2sum(b"never stored"))
        assert (unknown.state, unknown.copies, unknown.references) == ("absent", [], [])


async def test_recount_fixes_drifted_counts_and_leaves_local_counts_alone(
    open_ops_node: Callable[..., Any], autojump_clock: Any
) -> None:
    async with open_ops_node(gc_delay=60.0) as bm:
        ha = await bm.put_block(A)
        hb = await bm.put_block(B)
        hc = await bm.put_block(C)
        for owner in ("o1", "o2"):
            await bm.add_reference(ha, owner)
        await bm.add_reference(hb, "o1")
        await bm.remove_reference(hb, "o1")
        # Drift: counts that disagree with the references (mixing the low-level calls
        # with references is what the docs warn against; a bug would do the same).
        bm.incref(ha)  # 3 counted, 2 alive
        bm.incref(hb)  # 1 counted, 0 alive: only a tombstone
        bm.incref(hc)  # local count only: no reference rows at all
        report = await bm.repair_refcounts()
        assert report.blocks_checked == 2
        assert (report.counts_raised, report.counts_lowered, report.counts_fixed) == (0, 2, 2)
        changes = {c.hash: (c.old_count, c.new_count) for c in report.changes}
        assert changes == {ha: (3, 2), hb: (1, 0)}
        assert bm.get_block_rc(ha) == 2
        assert bm.get_rc_entry(hb).deletable_at is not None
        assert bm.get_block_rc(hc) == 1

        # Counts lower than the references are raised back.
        bm.decref(ha)
        bm.decref(ha)
        assert bm.get_rc_entry(ha).count == 0
        report = await bm.repair_refcounts()
        assert [(c.hash, c.old_count, c.new_count) for c in report.changes] == [(ha, 0, 2)]
        assert bm.get_block_rc(ha) == 2

        # A clean table: nothing changes.
        report = await bm.repair_refcounts()
        assert (report.blocks_checked, report.counts_fixed, report.changes) == (2, 0, [])

        # The block whose count went to zero is collected after gc_delay like any other.
        await trio.sleep(60 + 20)
        with trio.fail_after(120):
            while await bm.has_local_block(hb):  # noqa: ASYNC110
                await trio.sleep(1)
        assert await bm.has_local_block(ha) and await bm.has_local_block(hc)


async def test_a_repair_right_after_another_is_a_new_run(
    open_ops_node: Callable[..., Any], autojump_clock: Any
) -> None:
    # Regression: the second call returned the first run's report when it came before
    # the node had recorded the end of that run (Trio wakes the waiting tasks in either
    # order, hence the repeats).
    async with open_ops_node() as bm:
        for i in range(1, 21):
            bm.incref(blake2sum(i.to_bytes(4, "big")))  # nothing awaited between calls
            report = await bm.repair()
            assert report.rc_blocks == i


async def test_recount_is_an_operation_with_progress(
    open_ops_node: Callable[..., Any], autojump_clock: Any
) -> None:
    async with open_ops_node() as bm:
        hashes = [await bm.put_block(i.to_bytes(4, "big") * 8) for i in range(300)]
        await bm.add_references([(h, "o") for h in hashes])
        for h in hashes:
            bm.incref(h)  # drift on every block: one reference, two counts
        status = bm.start_operation("refcounts")
        assert status.state.value == "running"
        seen = set()
        while (now := bm.operation_status("refcounts")).state.value == "running":
            seen.add(now.progress)
            await trio.sleep(0.001)
        assert now.state.value == "done" and now.progress == 1.0
        assert len(seen) > 1  # it went through several batches
        report = now.report
        assert isinstance(report, trioblock.RecountReport)
        assert (report.blocks_checked, report.counts_lowered) == (300, 300)
        assert len(report.changes) == 100  # the first ones; the totals count them all
        assert all(bm.get_block_rc(h) == 1 for h in hashes)


async def test_snapshots_keep_the_newest_and_are_consistent_copies(
    open_ops_node: Callable[..., Any], autojump_clock: Any
) -> None:
    async with open_ops_node(metadata_snapshots_kept=2) as bm:
        h = await bm.put_block(A)
        taken = []
        for owner in ("s1", "s2", "s3"):
            await bm.add_reference(h, owner)
            taken.append(await bm.snapshot_metadata())
            await trio.sleep(1)
        kept = await bm.metadata_snapshots()
        assert [s.path for s in kept] == [s.path for s in taken[1:]]
        assert not taken[0].path.exists()
        assert kept[0].taken_msec < kept[1].taken_msec
        assert all(s.path.parent == bm.config.metadata_dir / "snapshots" for s in kept)
        # Nothing else is left there (no temp file, no -wal or -shm beside a snapshot).
        assert sorted((bm.config.metadata_dir / "snapshots").iterdir()) == [s.path for s in kept]
        # Each is a database as of its moment: 2 and 3 references.
        for snap, alive in zip(kept, (2, 3), strict=True):
            conn = sqlite3.connect(snap.path)
            try:
                assert conn.execute("SELECT COUNT(*) FROM block_ref").fetchone()[0] == alive
                assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            finally:
                conn.close()


async def test_automatic_snapshots_when_configured(
    open_ops_node: Callable[..., Any], autojump_clock: Any
) -> None:
    async with open_ops_node(metadata_auto_snapshot_interval=3600.0) as bm:
        assert await bm.metadata_snapshots() == []
        await trio.sleep(3600 * 3 + 1)
        assert len(await bm.metadata_snapshots()) == 2  # metadata_snapshots_kept
    async with open_ops_node() as bm:
        before = await bm.metadata_snapshots()
        await trio.sleep(3600 * 24)
        assert await bm.metadata_snapshots() == before  # off by default


def test_snapshot_settings_are_checked(make_config: Callable[..., Any]) -> None:
    for bad in (0, -1.0, float("inf"), "6h", True):
        with pytest.raises(trioblock.ConfigError, match="metadata_auto_snapshot_interval"):
            make_config(metadata_auto_snapshot_interval=bad).validate()
    for bad in (0, 1001, 2.0, True):
        with pytest.raises(trioblock.ConfigError, match="metadata_snapshots_kept"):
            make_config(metadata_snapshots_kept=bad).validate()


async def test_damaged_database_is_refused_with_how_to_restore(
    open_ops_node: Callable[..., Any], make_config: Callable[..., Any], autojump_clock: Any
) -> None:
    config = make_config()
    async with open_ops_node(config) as bm:
        h = await bm.put_block(A)
        await bm.add_reference(h, "before")
        await bm.snapshot_metadata()
        await bm.add_reference(h, "after")
    db = Path(config.metadata_dir) / "trioblock.sqlite"
    db.write_bytes(b"\0garbage" * 4096)
    with pytest.raises(MetadataCorruptError) as info:
        async with open_ops_node(config):
            pass
    message = str(info.value)
    assert str(db) in message and "trioblock meta restore" in message
    assert "snapshot" in message

    result = trioblock.restore_metadata(config.metadata_dir)
    assert result.database == db and len(result.moved_aside) >= 1
    assert all(p.exists() for p in result.moved_aside)
    async with open_ops_node(config) as bm:
        assert [r.owner for r in bm.references(h)] == [b"before"]
        assert await bm.has_local_block(h)


async def test_restore_refuses_a_running_node_and_an_empty_snapshot_dir(
    open_ops_node: Callable[..., Any], make_config: Callable[..., Any], autojump_clock: Any
) -> None:
    config = make_config()
    async with open_ops_node(config) as bm:
        with pytest.raises(trioblock.DatabaseError, match="no snapshot"):
            trioblock.restore_metadata(config.metadata_dir)
        await bm.snapshot_metadata()
        with pytest.raises(trioblock.DatabaseError, match="stop the node"):
            trioblock.restore_metadata(config.metadata_dir)


async def test_stats_of_a_single_node(
    open_ops_node: Callable[..., Any], autojump_clock: Any
) -> None:
    async with open_ops_node() as bm:
        h = await bm.put_block(A)
        await bm.put_block(B)
        await bm.add_reference(h, "o")
        stats = await bm.node_stats()
        assert (stats.node_id, stats.rc_rows, stats.references) == (bm.node_id, 1, 1)
        with trio.fail_after(60):
            while not (stats := await bm.node_stats()).exact:  # noqa: ASYNC110
                await trio.sleep(0.1)
        assert stats.blocks == 2 and stats.bytes > 0
        assert stats.metadata_dir.path == str(bm.config.metadata_dir)
        assert stats.metadata_dir.free is not None and stats.data_free > 0
        cluster = await bm.cluster_stats()
        assert cluster.nodes == {bm.node_id: cluster.nodes[bm.node_id]}
        assert cluster.replication_factor == 1 and cluster.complete
        # One node holding every block: it can take as much as its disk has free.
        assert cluster.usable_data == pytest.approx(stats.data_free, rel=0.05)


async def test_block_info_and_recount_see_a_reference_at_the_very_end_of_the_key_space(
    open_ops_node: Callable[..., Any], autojump_clock: Any
) -> None:
    h = trioblock.Hash(b"\xff" * 32)  # the last hash, with an owner of 0xff bytes
    async with open_ops_node() as bm:
        with pytest.raises(trioblock.MissingBlockError):  # no such block: the ref stands
            await bm.add_reference(h, b"\xff\xff")
        info = await bm.block_info(h)
        assert [r.owner for r in info.references] == [b"\xff\xff"]
        assert (info.refcount, info.references_alive) == (1, 1)
        await bm.repair_refcounts()
        assert (await bm.block_info(h)).refcount == 1
