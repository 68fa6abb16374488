"""Cluster references: quorum updates, catching up after downtime, wipes and partitions,
tombstone collection, over the in-memory network in virtual time (and once over TCP)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import trio

from trioblock import BlockManager, MissingBlockError, QuorumError, blake2sum
from trioblock.testing import Cluster, open_cluster

DATA = b"a referenced block " * 200
H = blake2sum(DATA)


async def reference_only(bm: BlockManager, h: bytes, owner: str) -> None:
    """``add_reference`` in a test of references alone: the block was never put, so
    the add raises ``MissingBlockError`` once a quorum has recorded it."""
    with contextlib.suppress(MissingBlockError):
        await bm.add_reference(h, owner)


def counts(cluster: Cluster, h: bytes = H) -> dict[str, int]:
    return {n: bm.get_block_rc(h) for n, bm in sorted(cluster.nodes.items())}


@pytest.mark.parametrize("transport", ["memory", "tcp"])
async def test_a_reference_is_counted_on_every_storage_node(tmp_path: Path, transport: str) -> None:
    async with open_cluster(tmp_path, n=3, transport=transport) as cluster:
        n0 = cluster.nodes["n0"]
        await n0.put_block(DATA)
        await n0.add_reference(H, "v1")
        await n0.add_reference(H, "v2")
        await n0.remove_reference(H, "v1")
        # The sends beyond the quorum finish in the background: give them a moment.
        with trio.fail_after(10):
            while counts(cluster) != {"n0": 1, "n1": 1, "n2": 1}:  # noqa: ASYNC110
                await trio.sleep(0.01)
        for bm in cluster.nodes.values():
            assert [(r.owner, r.deleted) for r in bm.references(H)] == [
                (b"v1", True),
                (b"v2", False),
            ]


async def test_quorum_error_names_each_failed_node(tmp_path: Path, autojump_clock) -> None:
    async with open_cluster(tmp_path, n=3, rpc_timeout=5.0) as cluster:
        await cluster.stop("n1")
        await cluster.stop("n2")
        with pytest.raises(QuorumError) as info:
            await cluster.nodes["n0"].add_reference(H, "v1")
        assert info.value.quorum == 2
        assert set(info.value.errors) == {"n1", "n2"}


async def test_a_node_that_was_down_catches_up_by_itself(tmp_path: Path, autojump_clock) -> None:
    async with open_cluster(tmp_path, n=3, ref_sync_interval=300.0) as cluster:
        await cluster.nodes["n0"].put_block(DATA)
        await cluster.stop("n2")
        await cluster.nodes["n0"].add_reference(H, "v1")
        await cluster.nodes["n1"].add_reference(H, "v2")
        await cluster.nodes["n0"].remove_reference(H, "v1")
        await cluster.start("n2")
        assert cluster.nodes["n2"].get_block_rc(H) == 0
        await trio.sleep(310)  # one anti-entropy interval: no call from the application
        assert counts(cluster) == {"n0": 1, "n1": 1, "n2": 1}
        assert len(cluster.nodes["n2"].references(H)) == 2


async def test_a_wiped_node_gets_its_references_and_blocks_back(
    tmp_path: Path, autojump_clock
) -> None:
    async with open_cluster(tmp_path, n=3, rpc_timeout=10.0) as cluster:
        await cluster.nodes["n0"].put_block(DATA)
        await cluster.nodes["n0"].add_reference(H, "v1")
        await trio.sleep(1)
        wiped = await cluster.wipe("n1")
        assert wiped.get_block_rc(H) == 0 and not await wiped.has_local_block(H)
        report = await wiped.sync_references()
        assert report.pulled == 1
        assert wiped.get_block_rc(H) == 1
        await trio.sleep(30)  # resync fetches the block it now knows is referenced
        assert await wiped.has_local_block(H)


async def test_a_partitioned_node_converges_after_heal(tmp_path: Path, autojump_clock) -> None:
    async with open_cluster(tmp_path, n=3, rpc_timeout=5.0) as cluster:
        n0 = cluster.nodes["n0"]
        await n0.put_block(DATA)
        await n0.add_reference(H, "v1")
        await trio.sleep(1)
        cluster.net.partition(["n2"], ["n0", "n1"])
        await n0.remove_reference(H, "v1")
        await trio.sleep(1)
        assert counts(cluster) == {"n0": 0, "n1": 0, "n2": 1}
        cluster.net.heal()
        await cluster.nodes["n2"].sync_references()
        assert counts(cluster) == {"n0": 0, "n1": 0, "n2": 0}


async def test_tombstones_are_collected_only_once_every_node_holds_them(
    tmp_path: Path, autojump_clock
) -> None:
    async with open_cluster(tmp_path, n=3, gc_delay=60.0, rpc_timeout=5.0) as cluster:
        n0 = cluster.nodes["n0"]
        await n0.put_block(DATA)
        await n0.add_reference(H, "v1")
        await trio.sleep(1)
        await cluster.stop("n2")
        await n0.remove_reference(H, "v1")
        await trio.sleep(120)
        report = await n0.sync_references()
        assert report.collected == 0  # n2 may still hold the live entry
        assert len(n0.references(H)) == 1
        await cluster.start("n2")
        await n0.sync_references()  # n2 now holds the tombstone; all may drop it
        for node in ("n0", "n1", "n2"):
            await cluster.nodes[node].sync_references()
        assert {n: bm.references(H) for n, bm in cluster.nodes.items()} == {
            "n0": [],
            "n1": [],
            "n2": [],
        }
        assert counts(cluster) == {"n0": 0, "n1": 0, "n2": 0}


async def test_sync_between_many_entries_uses_the_digest_tree(
    tmp_path: Path, autojump_clock
) -> None:
    """Enough entries that the sync descends below the root: all arrive, none twice."""
    async with open_cluster(tmp_path, n=3, ref_sync_interval=10_000.0) as cluster:
        await cluster.stop("n2")
        n0 = cluster.nodes["n0"]
        hashes = [blake2sum(b"%d" % i) for i in range(1500)]
        for h in hashes:
            await reference_only(n0, h, "owner")
        n2 = await cluster.start("n2")
        report = await n2.sync_references()
        assert report.pulled == 1500
        assert all(n2.get_block_rc(h) == 1 for h in hashes)
        again = await n2.sync_references()
        assert (again.pulled, again.pushed) == (0, 0)


async def test_many_concurrent_updates_do_not_deadlock_on_background_slots(
    tmp_path: Path, autojump_clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More callers at once than there are background-send slots: every one completes.

    Each update needs one slot per remote storage node; callers that each took part of
    what they need must not hold every slot while waiting for the rest.
    """
    import trioblock._node.refupdates as references_module

    monkeypatch.setattr(references_module, "MAX_BACKGROUND_SENDS", 4)
    async with open_cluster(tmp_path, n=3, rpc_timeout=5.0) as cluster:
        n0 = cluster.nodes["n0"]
        await n0.put_block(DATA)
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for i in range(16):
                    nursery.start_soon(n0.add_reference, H, f"owner-{i}")
        await n0.sync_references()
        assert counts(cluster) == {"n0": 16, "n1": 16, "n2": 16}


async def test_an_unresponsive_peer_costs_one_timeout_per_pass_not_one_per_batch(
    tmp_path: Path, autojump_clock
) -> None:
    """Tombstones shared with a peer that does not answer stay, and cost one rpc_timeout."""
    async with open_cluster(
        tmp_path, n=3, gc_delay=60.0, rpc_timeout=5.0, ref_sync_interval=10_000.0
    ) as cluster:
        n0 = cluster.nodes["n0"]
        hashes = [blake2sum(b"%d" % i) for i in range(700)]  # several collection batches
        for h in hashes:
            await reference_only(n0, h, "o")
            await n0.remove_reference(h, "o")
        await trio.sleep(120)
        cluster.net.set_delay("n2", 1000.0)  # n2 answers nothing in time
        started = trio.current_time()
        report = await n0.sync_references()
        assert trio.current_time() - started < 3 * 5.0
        assert report.collected == 0 and set(report.failed) == {"n2"}
        assert n0.ref_len() == 700
        cluster.net.set_delay("n2", 0)
        report = await n0.sync_references()
        assert report.collected == 700
        assert [bm.ref_len() for bm in cluster.nodes.values()] == [0, 0, 0]


async def test_one_block_with_thousands_of_owners_syncs_in_windows(
    tmp_path: Path, autojump_clock
) -> None:
    """Owners of one block all fall under one key prefix: both sides' differences in it
    (interleaved) are exchanged page by page, and both end with the union."""
    async with open_cluster(
        tmp_path,
        n=2,
        replication_factor=2,
        write_quorum=1,
        rpc_timeout=5.0,
        ref_sync_interval=1_000_000.0,  # only the pass below exchanges entries
    ) as cluster:
        n0, n1 = cluster.nodes["n0"], cluster.nodes["n1"]
        await n0.put_block(DATA)  # on both nodes (write quorum 1: let the second land)
        await trio.sleep(1)
        cluster.net.partition(["n0"], ["n1"])
        for i in range(1200):
            await n0.add_reference(H, f"{i:05d}-a")
            await n1.add_reference(H, f"{i:05d}-b")
        await n1.remove_reference(H, "00007-a")  # a tombstone n0 has not seen
        # Let the removal's own send to n0 time out first: healed while it was still
        # under way, it delivered the tombstone itself now and then (pulled 1200).
        await trio.sleep(2 * 5.0)
        cluster.net.heal()
        report = await n0.sync_references()
        assert (report.pulled, report.pushed) == (1201, 1199)
        for bm in (n0, n1):
            assert bm.get_block_rc(H) == 2399
            assert len(bm.references(H)) == 2400
        again = await n0.sync_references()
        assert (again.pulled, again.pushed) == (0, 0)
