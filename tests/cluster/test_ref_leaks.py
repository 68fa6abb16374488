"""Leaks of cluster references found by randomized schedules: a storage node holding a
copy whose live reference it never saw, and that later learns only the tombstone, must
still delete its copy after ``gc_delay``."""

from __future__ import annotations

from pathlib import Path

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
