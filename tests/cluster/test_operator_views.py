"""Operator views across a cluster (block info of every storage node, cluster stats),
and a node restored from a metadata snapshot, or with its database lost, catching up
from its peers — in virtual time over the in-memory network."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import trio

import trioblock
from trioblock import BlockInfo, MetadataCorruptError, blake2sum
from trioblock.testing import Cluster, open_cluster

BLOCKS = [bytes([i]) * 5000 + b"payload" for i in range(12)]


async def converge(cluster: Cluster, node: str, alive: dict[trioblock.Hash, set[bytes]]) -> None:
    """Run anti-entropy from ``node`` and wait until it holds the ``alive`` owners of
    each block and a copy of each (its resync fetches them)."""
    bm = cluster.nodes[node]
    await bm.sync_references()
    with trio.fail_after(600):
        while True:
            refs_ok = all(
                {r.owner for r in bm.references(h) if not r.deleted} == owners
                for h, owners in alive.items()
            )
            if refs_ok and all([await bm.has_local_block(h) for h in alive]):
                return
            await trio.sleep(1)


async def test_block_info_of_every_storage_node(tmp_path: Path, autojump_clock: Any) -> None:
    async with open_cluster(tmp_path, n=4, replication_factor=3) as cluster:
        n0 = cluster.nodes["n0"]
        h = await n0.put_block(BLOCKS[0])
        await n0.add_reference(h, "v1")
        await n0.sync_references()
        nodes = cluster.layout.storage_nodes(h)
        views = await n0.cluster_block_info(h)
        assert list(views) == list(nodes)
        for node, view in views.items():
            assert isinstance(view, BlockInfo)
            assert view.node_id == node and view.refcount == 1 and view.is_storage_node
            assert [r.owner for r in view.references] == [b"v1"]
            assert len(view.copies) == 1
        await cluster.stop(nodes[-1])
        views = await n0.cluster_block_info(h)
        assert isinstance(views[nodes[-1]], str)  # why it could not be asked
        assert all(isinstance(views[n], BlockInfo) for n in nodes[:-1])


async def test_cluster_stats_through_a_gateway(tmp_path: Path, autojump_clock: Any) -> None:
    async with open_cluster(tmp_path, n=3, replication_factor=2) as cluster:
        n0 = cluster.nodes["n0"]
        hashes = [await n0.put_block(b) for b in BLOCKS[:6]]
        await n0.add_references([(h, "o") for h in hashes])
        with trio.fail_after(60):
            while sum([(await bm.node_stats()).blocks for bm in cluster.nodes.values()]) < 12:  # noqa: ASYNC110
                await trio.sleep(0.1)
        async with cluster.open_gateway("app") as gw:
            stats = await gw.cluster_stats()
        assert set(stats.nodes) == {"n0", "n1", "n2"} and stats.complete
        assert stats.replication_factor == 2 and stats.unreachable == {}
        assert sum(s.blocks for s in stats.nodes.values()) == 12  # 6 blocks, 2 copies each
        assert sum(s.references for s in stats.nodes.values()) == 12
        # All three nodes share one filesystem here: the estimate is the free space
        # divided by each node's share of the hash space (2/3), at the least-free node.
        free = min(s.data_free for s in stats.nodes.values())
        assert stats.usable_data == pytest.approx(free * 3 / 2, rel=0.05)
        assert stats.usable_metadata is not None

        await cluster.stop("n2")
        stats = await cluster.nodes["n0"].cluster_stats()
        assert set(stats.unreachable) == {"n2"} and not stats.complete


async def test_a_node_restored_from_its_snapshot_catches_up(
    tmp_path: Path, autojump_clock: Any
) -> None:
    async with open_cluster(tmp_path, n=3, replication_factor=3, gc_delay=60.0) as cluster:
        n0 = cluster.nodes["n0"]
        early = [await n0.put_block(b) for b in BLOCKS[:4]]
        await n0.add_references([(h, "early") for h in early])
        await n0.sync_references()
        await cluster.nodes["n1"].snapshot_metadata()
        await cluster.stop("n1")
        # While n1 is down: more blocks and references, and one reference removed.
        late = [await n0.put_block(b) for b in BLOCKS[4:8]]
        await n0.add_references([(h, "late") for h in late + early])
        await n0.remove_reference(early[0], "early")

        db = cluster.metadata_dir("n1") / "trioblock.sqlite"
        db.write_bytes(b"not a database" * 1000)
        with pytest.raises(MetadataCorruptError, match="trioblock meta restore"):
            await cluster.start("n1")
        trioblock.restore_metadata(cluster.metadata_dir("n1"))
        n1 = await cluster.start("n1")
        # As of the snapshot: the early references only, and none of the late blocks.
        assert {r.owner for r in n1.references(early[1])} == {b"early"}
        assert n1.references(late[0]) == []
        assert not await n1.has_local_block(late[0])

        await converge(
            cluster,
            "n1",
            {
                **{h: {b"late"} for h in late + early[:1]},
                **{h: {b"early", b"late"} for h in early[1:]},
            },
        )
        assert {(r.owner, r.deleted) for r in n1.references(early[0])} == {
            (b"early", True),
            (b"late", False),
        }
        for h, data in zip(early + late, BLOCKS, strict=False):
            assert n1.get_block_rc(h) == (2 if h in early[1:] else 1)
            assert await n1.has_local_block(h) and await n1.get_block(h) == data
        views = await n1.cluster_block_info(late[0])
        assert all(isinstance(v, BlockInfo) and v.refcount == 1 for v in views.values())


@pytest.mark.parametrize("data", ["kept", "lost"])
async def test_a_node_whose_database_is_lost_starts_empty_and_catches_up(
    tmp_path: Path, autojump_clock: Any, data: str
) -> None:
    async with open_cluster(tmp_path, n=3, replication_factor=3) as cluster:
        n0 = cluster.nodes["n0"]
        hashes = [await n0.put_block(b) for b in BLOCKS[:6]]
        await n0.add_references([(h, "o") for h in hashes])
        await n0.sync_references()
        await cluster.stop("n2")
        for f in cluster.metadata_dir("n2").glob("trioblock.sqlite*"):
            f.unlink()
        if data == "lost":
            shutil.rmtree(cluster.data_dir("n2"))
        n2 = await cluster.start("n2")
        assert n2.ref_len() == 0
        await converge(cluster, "n2", {h: {b"o"} for h in hashes})
        for h, data in zip(hashes, BLOCKS, strict=False):
            assert n2.get_block_rc(h) == 1
            assert blake2sum(await n2.get_block(h)) == h and await n2.get_block(h) == data


def a_view() -> dict[str, Any]:
    """A well-formed peer's view of a block, as it comes off the wire."""
    return BlockInfo(
        hash=blake2sum(b"x"),
        node_id="n1",
        now=1,
        refcount=1,
        state="present",
        deletable_at=None,
        references_alive=1,
        references_removed=0,
        references=[trioblock.Reference(b"v1", False, 5)],
        copies=[trioblock.LocalCopy("/d", "/d/aa/bb/x.zst", "compressed", 10)],
        storage_nodes=["n1"],
        is_storage_node=True,
        queued=[],
        errors=0,
        last_try=None,
        next_try=None,
    ).to_map()


@pytest.mark.parametrize(
    "change",
    [
        {"references": [{}]},
        {"references": [[b"v1", False]]},
        {"references": [[b"v1", False, 5, 6]]},
        {"references": ["abc"]},
        {"copies": [{"a": 1}]},
        {"copies": [["/d", "/d/x", "plain"]]},
        {"copies": [["/d", "/d/x", "plain", "10"]]},
        {"references": {}},
        {"hash": b"short"},
        {"hash": bytes(blake2sum(b"y"))},  # not the block asked about
        {"node_id": "n2"},  # not the node asked
    ],
)
def test_a_peers_malformed_or_mismatched_block_info_is_a_protocol_error(
    change: dict[str, Any],
) -> None:
    view = a_view()
    assert BlockInfo.from_map(view, hash=blake2sum(b"x"), node_id="n1").to_map() == view
    with pytest.raises(trioblock.ProtocolError):
        BlockInfo.from_map({**view, **change}, hash=blake2sum(b"x"), node_id="n1")
