"""Leaks of cluster references found by randomized schedules and a backup trial: a
storage node holding a copy whose live reference it never saw, and that later learns
only the tombstone, must still delete its copy after ``gc_delay``; references removed
while one storage node is down free the space on the others."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import trio

from trioblock import blake2sum
from trioblock.testing import open_cluster

DATA = b"a block whose reference a node never saw " * 100
H = blake2sum(DATA)


async def test_a_copy_whose_reference_was_never_seen_is_collected_after_its_tombstone(
    tmp_path: Path, autojump_clock
) -> None:
    async with open_cluster(tmp_path, n=3, gc_delay=60.0, ref_sync_interval=120.0) as cluster:
        await cluster.nodes["n0"].put_block(DATA)
        await trio.sleep(1)  # the third copy lands on n2 too
        assert await cluster.nodes["n2"].has_local_block(H)
        await cluster.stop("n2")
        await cluster.nodes["n0"].add_reference(H, "snapshot-1")
        await cluster.nodes["n0"].remove_reference(H, "snapshot-1")
        n2 = await cluster.start("n2")
        assert n2.references(H) == []  # it saw neither the add nor the remove
        await trio.sleep(600)  # anti-entropy brings the tombstone; then gc_delay passes
        assert [r.deleted for r in n2.references(H)] in ([True], [])
        for node_id, bm in sorted(cluster.nodes.items()):
            assert not await bm.has_local_block(H), f"{node_id} kept the copy"


async def test_a_tombstone_for_a_referenced_block_deletes_nothing(
    tmp_path: Path, autojump_clock
) -> None:
    async with open_cluster(tmp_path, n=3, gc_delay=60.0, ref_sync_interval=120.0) as cluster:
        await cluster.nodes["n0"].put_block(DATA)
        await cluster.nodes["n0"].add_reference(H, "keep")
        await trio.sleep(1)
        await cluster.stop("n2")
        await cluster.nodes["n0"].add_reference(H, "gone")
        await cluster.nodes["n0"].remove_reference(H, "gone")
        n2 = await cluster.start("n2")
        await trio.sleep(600)
        assert n2.get_block_rc(H) == 1
        for node_id, bm in sorted(cluster.nodes.items()):
            assert await bm.has_local_block(H), f"{node_id} lost the copy"


async def test_removing_references_while_a_node_is_down_frees_space_on_the_others(
    tmp_path: Path, autojump_clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trioblock.resync")
    async with open_cluster(tmp_path, n=3, gc_delay=60.0, ref_sync_interval=120.0) as cluster:
        n0 = cluster.nodes["n0"]
        blocks = [f"snapshot chunk {i} ".encode() * 50 for i in range(5)]
        hashes = [await n0.put_block(b) for b in blocks]
        await n0.add_references([(h, "snapshot-1") for h in hashes])
        await trio.sleep(1)
        await cluster.stop("n2")
        assert await n0.remove_owner("snapshot-1") == 5
        await trio.sleep(300)  # gc_delay, the deletion check, and a retry or two
        for node_id in ("n0", "n1"):
            bm = cluster.nodes[node_id]
            for h in hashes:
                assert not await bm.has_local_block(h), f"{node_id} kept {h.short()}"
            assert bm.resync_errors_len() == 0
        lines = [r.getMessage() for r in caplog.records if "without asking n2" in r.getMessage()]
        assert 1 <= len(lines) <= 2, lines  # one line per batch, not one per block
        n2 = await cluster.start("n2")  # it learns the tombstones and deletes its copies
        await trio.sleep(600)
        for h in hashes:
            assert not await n2.has_local_block(h)


async def test_a_live_reference_on_the_nodes_asked_keeps_the_block(
    tmp_path: Path, autojump_clock
) -> None:
    async with open_cluster(tmp_path, n=3, gc_delay=60.0, ref_sync_interval=120.0) as cluster:
        n0 = cluster.nodes["n0"]
        await n0.put_block(DATA)
        await n0.add_reference(H, "a")
        await trio.sleep(1)
        await cluster.stop("n2")
        await n0.add_reference(H, "b")  # acknowledged by n0 and n1 only
        await n0.remove_reference(H, "a")
        await trio.sleep(300)
        for node_id in ("n0", "n1"):
            assert await cluster.nodes[node_id].has_local_block(H)
        n2 = await cluster.start("n2")
        await trio.sleep(600)
        assert n2.get_block_rc(H) == 1 and await n2.has_local_block(H)


async def test_a_node_that_can_ask_too_few_keeps_its_copies_and_says_so_once_per_batch(
    tmp_path: Path, autojump_clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trioblock.resync")
    async with open_cluster(tmp_path, n=3, gc_delay=60.0, ref_sync_interval=120.0) as cluster:
        n0 = cluster.nodes["n0"]
        hashes = [await n0.put_block(f"chunk {i} ".encode() * 50) for i in range(5)]
        await n0.add_references([(h, "snapshot-1") for h in hashes])
        await n0.remove_owner("snapshot-1")
        await trio.sleep(1)
        cluster.net.partition(["n0"], ["n1", "n2"])  # n0 can ask neither
        await trio.sleep(300)
        assert all([await n0.has_local_block(h) for h in hashes])  # kept: too few asked
        for node_id in ("n1", "n2"):  # each could ask all but n0: space freed
            assert not any([await cluster.nodes[node_id].has_local_block(h) for h in hashes])
        kept = [
            r.getMessage()
            for r in caplog.records
            if r.levelno >= logging.WARNING and r.getMessage().startswith("n0:")
        ]
        assert len(kept) == 1, kept
        assert "5 unreferenced blocks kept for now" in kept[0]
        cluster.net.heal()
        n0.retry_all_now()
        await trio.sleep(30)
        assert not any([await n0.has_local_block(h) for h in hashes])
