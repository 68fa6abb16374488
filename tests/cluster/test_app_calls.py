"""The calls a deduplicating application makes: which blocks the cluster lacks, batched
references with a report of the failed pairs, references by owner, and an add that comes
too late for its block — on storage nodes and gateways alike."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

import trioblock._node.appcalls as appcalls
from trioblock import (
    BlockManager,
    MissingBlockError,
    QuorumError,
    ReferenceBatchError,
    blake2sum,
)
from trioblock.testing import Cluster, open_cluster

BLOCKS = [f"chunk {i} of a backup ".encode() * 60 for i in range(6)]
HASHES = [blake2sum(b) for b in BLOCKS]


@asynccontextmanager
async def cluster_and_client(
    tmp_path: Path, via: str, **config: object
) -> AsyncIterator[tuple[Cluster, BlockManager]]:
    async with open_cluster(tmp_path, n=3, **config) as cluster:
        if via == "gateway":
            async with cluster.open_gateway("app") as gw:
                yield cluster, gw
        else:
            yield cluster, cluster.nodes["n0"]


def counts(cluster: Cluster, h: bytes) -> list[int]:
    return [bm.get_block_rc(h) for _n, bm in sorted(cluster.nodes.items())]


@pytest.mark.parametrize("via", ["node", "gateway"])
async def test_missing_blocks_counts_a_block_held_by_a_quorum_only(
    tmp_path: Path, autojump_clock, via: str
) -> None:
    async with cluster_and_client(tmp_path, via) as (cluster, app):
        for data in BLOCKS[:3]:
            await app.put_block(data)
        await trio.sleep(1)  # every copy lands
        # HASHES[1]: two copies of three (still the write quorum); HASHES[2]: one.
        cluster.nodes["n2"].purge(HASHES[1])
        cluster.nodes["n1"].purge(HASHES[2])
        cluster.nodes["n2"].purge(HASHES[2])
        assert await app.missing_blocks(HASHES) == set(HASHES[2:])
        assert await app.missing_blocks([]) == set()
        await cluster.stop("n1")  # a node that cannot be asked holds nothing
        assert await app.missing_blocks(HASHES[:2]) == {HASHES[1]}
        await app.put_block(BLOCKS[1])  # putting it again restores the quorum
        assert await app.missing_blocks(HASHES[:2]) == set()


@pytest.mark.parametrize("via", ["node", "gateway"])
async def test_batched_references_count_on_every_storage_node(
    tmp_path: Path, autojump_clock, via: str
) -> None:
    async with cluster_and_client(tmp_path, via) as (cluster, app):
        for data in BLOCKS:
            await app.put_block(data)
        pairs = [(h, "snap-1") for h in HASHES] + [(HASHES[0], b"snap-1"), (HASHES[0], "x")]
        assert await app.add_references(pairs) == 7  # the repeated pair counts once
        await trio.sleep(1)
        assert counts(cluster, HASHES[0]) == [2, 2, 2]
        assert all(counts(cluster, h) == [1, 1, 1] for h in HASHES[1:])
        assert await app.remove_references([(h, "snap-1") for h in HASHES]) == 6
        await trio.sleep(1)
        assert counts(cluster, HASHES[0]) == [1, 1, 1]
        assert all(counts(cluster, h) == [0, 0, 0] for h in HASHES[1:])
        assert await app.add_references([]) == 0


async def test_a_batch_goes_as_one_message_per_storage_node(tmp_path: Path, autojump_clock) -> None:
    async with open_cluster(tmp_path, n=3) as cluster, cluster.open_gateway("app") as gw:
        for data in BLOCKS:
            await gw.put_block(data)
        stats = gw.rpc_stats()
        assert stats is not None
        before = stats.requests
        await gw.add_references([(h, "snap") for h in HASHES])
        with trio.fail_after(10):
            while stats.requests < before + 3:  # noqa: ASYNC110
                await trio.sleep(0.01)
        await trio.sleep(0.1)
        assert stats.requests == before + 3
        assert await gw.missing_blocks(HASHES) == set()  # one question per storage node
        assert stats.requests == before + 6


@pytest.mark.parametrize("via", ["node", "gateway"])
async def test_a_batch_names_each_failed_pair_with_its_cause(
    tmp_path: Path, autojump_clock, via: str
) -> None:
    async with cluster_and_client(tmp_path, via, rpc_timeout=5.0) as (cluster, app):
        await app.put_block(BLOCKS[0])
        never_put = blake2sum(b"never put")
        with pytest.raises(ReferenceBatchError) as info:
            await app.add_references([(HASHES[0], "s"), (never_put, "s")])
        assert info.value.succeeded == 1
        assert set(info.value.failed) == {(bytes(never_put), b"s")}
        assert isinstance(info.value.failed[(bytes(never_put), b"s")], MissingBlockError)
        assert info.value.missing == [never_put]
        await cluster.stop("n1")
        await cluster.stop("n2")
        with pytest.raises(ReferenceBatchError) as info:
            await app.remove_references([(HASHES[0], "s"), (never_put, "s")])
        assert info.value.succeeded == 0
        for error in info.value.failed.values():
            assert isinstance(error, QuorumError)
            assert set(error.errors) == {"n1", "n2"}


@pytest.mark.parametrize("via", ["node", "gateway"])
async def test_a_reference_taken_after_the_block_was_collected_raises_missing(
    tmp_path: Path, autojump_clock, via: str
) -> None:
    async with cluster_and_client(tmp_path, via, gc_delay=60.0) as (cluster, app):
        h = await app.put_block(BLOCKS[0])
        await app.add_reference(h, "old snapshot")
        await app.remove_reference(h, "old snapshot")
        # A deduplicating writer saw the block a while ago and is slow to reference it:
        # meanwhile the old snapshot's removal let the GC collect every copy.
        await trio.sleep(200)
        for bm in cluster.nodes.values():
            assert not await bm.has_local_block(h)
        with pytest.raises(MissingBlockError):
            await app.add_reference(h, "late")
        await app.put_block(BLOCKS[0])  # the application puts it again
        await app.add_reference(h, "late")  # idempotent: now quietly fine
        await trio.sleep(200)
        for bm in cluster.nodes.values():
            assert await bm.has_local_block(h)
        assert await app.get_block(h) == BLOCKS[0]


@pytest.mark.parametrize("via", ["node", "gateway"])
async def test_owned_by_lists_an_owners_live_references_and_remove_owner_drops_them(
    tmp_path: Path, autojump_clock, via: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(appcalls, "OWNED_PAGE", 2)  # several pages per node
    async with cluster_and_client(tmp_path, via, rpc_timeout=5.0) as (cluster, app):
        for data in BLOCKS:
            await app.put_block(data)
        await app.add_references([(h, "snap-1") for h in HASHES[:3]])
        await cluster.stop("n2")  # n2 misses the next adds and the removal
        await app.add_references([(h, "snap-1") for h in HASHES[3:]])
        await app.add_references([(h, "snap-2") for h in HASHES[:2]])
        await app.remove_reference(HASHES[0], "snap-1")
        await cluster.start("n2")  # n2 still has HASHES[0] alive for snap-1: deleted wins
        assert [h async for h in app.owned_by("snap-1")] == sorted(HASHES[1:])
        assert [h async for h in app.owned_by(b"snap-2")] == sorted(HASHES[:2])
        assert [h async for h in app.owned_by("nobody")] == []
        await cluster.stop("n1")
        assert await app.remove_owner("snap-1") == 5
        await cluster.start("n1")
        assert [h async for h in app.owned_by("snap-1")] == []
        assert await app.remove_owner("snap-1") == 0
        await trio.sleep(700)  # anti-entropy: every node agrees
        for h in HASHES[2:]:
            assert counts(cluster, h) == [0, 0, 0]
        assert counts(cluster, HASHES[0]) == [1, 1, 1]  # snap-2's


async def test_owned_by_refuses_an_incomplete_listing(tmp_path: Path, autojump_clock) -> None:
    async with cluster_and_client(tmp_path, "gateway", rpc_timeout=5.0) as (cluster, app):
        await cluster.stop("n1")
        await cluster.stop("n2")
        with pytest.raises(QuorumError) as info:
            [h async for h in app.owned_by("snap")]
        assert set(info.value.errors) == {"n1", "n2"}
        with pytest.raises(QuorumError):
            await app.remove_owner("snap")


async def test_a_large_batch_goes_in_parts_and_messages_of_bounded_size(
    tmp_path: Path, autojump_clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(appcalls, "SUB_BATCH", 2)  # parts of 2 pairs
    monkeypatch.setattr(appcalls, "BATCH_ENTRIES", 1)  # one entry per message
    async with cluster_and_client(tmp_path, "gateway") as (cluster, app):
        for data in BLOCKS[:5]:
            await app.put_block(data)
        never_put = blake2sum(b"never put")
        with pytest.raises(ReferenceBatchError) as info:
            await app.add_references([(h, "s") for h in HASHES[:5]] + [(never_put, "s")])
        assert info.value.succeeded == 5 and info.value.missing == [never_put]
        await trio.sleep(1)
        assert all(counts(cluster, h) == [1, 1, 1] for h in HASHES[:5])
