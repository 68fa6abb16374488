"""Replication, reads from peers, hedging, quorum errors and offload, on in-process clusters.

Timed behaviour runs under the MockClock (``autojump_clock``); a few tests repeat over
TCP on loopback with the real clock and short timeouts.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from trioblock import (
    BlockManager,
    CorruptBlockError,
    Hash,
    MissingBlockError,
    QuorumError,
    blake2sum,
)
from trioblock.testing import Cluster, open_cluster


async def local_copy_is_valid(bm: BlockManager, h: Hash, data: bytes) -> bool:
    """Whether ``bm`` holds a copy of ``h`` that reads back as ``data`` without a
    corruption being found (a corrupt local copy would be counted, then read from a peer)."""
    if await bm.local_block_path(h) is None:
        return False
    corruptions = bm.metrics.corruptions
    return await bm.get_block(h) == data and bm.metrics.corruptions == corruptions


async def holders(cluster: Cluster, h: bytes) -> set[str]:
    return {n for n, bm in cluster.nodes.items() if await bm.has_local_block(h)}


@pytest.mark.parametrize("transport", ["memory", "tcp"])
async def test_put_replicates_to_every_storage_node(tmp_path: Path, transport: str) -> None:
    async with open_cluster(
        tmp_path, n=4, replication_factor=3, write_quorum=3, transport=transport
    ) as cluster:
        data = b"replicated" * 1000
        h = await cluster.nodes["n0"].put_block(data)  # quorum 3: every copy is durable
        assert await holders(cluster, h) == set(cluster.layout.storage_nodes(h))
        for bm in cluster.nodes.values():
            assert await bm.get_block(h) == data


async def test_put_returns_at_quorum_while_slow_node_finishes_later(
    tmp_path: Path, autojump_clock: object
) -> None:
    async with open_cluster(tmp_path, n=3, rpc_timeout=30.0) as cluster:
        cluster.net.set_delay("n2", 2.0)
        start = trio.current_time()
        h = await cluster.nodes["n0"].put_block(b"quorum first" * 100)
        assert trio.current_time() - start < 2.0
        assert "n2" not in await holders(cluster, h)
        await trio.sleep(30)
        assert await holders(cluster, h) == {"n0", "n1", "n2"}


@pytest.mark.parametrize("transport", ["memory", "tcp"])
async def test_put_without_quorum_raises_with_per_node_causes(
    tmp_path: Path, transport: str
) -> None:
    async with open_cluster(tmp_path, n=3, transport=transport, rpc_timeout=5.0) as cluster:
        await cluster.stop("n1")
        await cluster.stop("n2")
        with pytest.raises(QuorumError) as info:
            await cluster.nodes["n0"].put_block(b"alone")
        # The local write may still be finishing: the quorum was already out of reach.
        assert info.value.successes <= 1
        assert info.value.quorum == 2
        assert set(info.value.errors) == {"n1", "n2"}


@pytest.mark.parametrize("transport", ["memory", "tcp"])
async def test_get_fetches_from_peer_when_local_copy_missing(
    tmp_path: Path, transport: str
) -> None:
    async with open_cluster(tmp_path, n=3, transport=transport, rpc_timeout=5.0) as cluster:
        await cluster.stop("n2")
        h = await cluster.nodes["n0"].put_block(b"written while n2 was away" * 50)
        n2 = await cluster.start("n2")
        assert not await n2.has_local_block(h)
        assert await n2.get_block(h) == b"written while n2 was away" * 50
        async with n2.stream_block(h) as chunks:
            assert b"".join([c async for c in chunks]) == b"written while n2 was away" * 50


async def test_hedged_read_avoids_waiting_for_a_slow_peer(
    tmp_path: Path, autojump_clock: object
) -> None:
    async with open_cluster(tmp_path, n=3, rpc_timeout=30.0) as cluster:
        h = await cluster.nodes["n0"].put_block(b"hedge me" * 100)
        await trio.testing.wait_all_tasks_blocked()
        reader = await cluster.wipe("n2")
        first = next(n for n in cluster.layout.read_nodes(h) if n != "n2")
        cluster.net.set_delay(first, 20.0)
        start = trio.current_time()
        assert await reader.get_block(h) == b"hedge me" * 100
        assert trio.current_time() - start < 5.0
        assert reader.metrics.hedged_reads == 1


async def test_corrupted_transfer_is_refused_and_never_stored(
    tmp_path: Path, autojump_clock: object
) -> None:
    async with open_cluster(tmp_path, n=3) as cluster:
        cluster.net.corrupt_next("n0", n=1)
        data = b"must arrive intact" * 200
        h = await cluster.nodes["n0"].put_block(data)  # n0 and one intact copy: quorum
        await trio.testing.wait_all_tasks_blocked()
        stored = 0
        for node in ("n1", "n2"):
            bm = cluster.nodes[node]
            if await bm.has_local_block(h):
                assert await local_copy_is_valid(bm, h, data)
                stored += 1
        assert stored == 1


async def test_put_fails_when_every_transfer_is_corrupted(
    tmp_path: Path, autojump_clock: object
) -> None:
    async with open_cluster(tmp_path, n=3) as cluster:
        cluster.net.corrupt_next("n0", n=2)
        data = b"corrupted on the wire" * 200
        with pytest.raises(QuorumError) as info:
            await cluster.nodes["n0"].put_block(data)
        assert all(isinstance(e, CorruptBlockError) for e in info.value.errors.values())
        assert set(info.value.errors) == {"n1", "n2"}
        h = blake2sum(data)
        assert not await cluster.nodes["n1"].has_local_block(h)
        assert not await cluster.nodes["n2"].has_local_block(h)


async def test_corrupt_local_copy_is_quarantined_and_repaired_from_peers(
    tmp_path: Path, autojump_clock: object
) -> None:
    async with open_cluster(tmp_path, n=3) as cluster:
        data = b"repair me" * 300
        n0 = cluster.nodes["n0"]
        h = await n0.put_block(data)
        for bm in cluster.nodes.values():
            bm.incref(h)
        path = await n0.local_block_path(h)
        assert path is not None
        raw = bytearray(path.read_bytes())
        raw[10] ^= 0x01
        path.write_bytes(bytes(raw))
        assert await n0.get_block(h) == data  # from a peer
        assert path.with_name(path.name + ".corrupted").exists()
        await trio.sleep(5)
        assert await local_copy_is_valid(n0, h, data)


@pytest.mark.parametrize("transport", ["memory", "tcp"])
async def test_missing_everywhere_raises_missing_block_error(
    tmp_path: Path, transport: str
) -> None:
    async with open_cluster(tmp_path, n=3, transport=transport, rpc_timeout=5.0) as cluster:
        with pytest.raises(MissingBlockError):
            await cluster.nodes["n1"].get_block(blake2sum(b"never stored"))


async def test_deletion_offloads_to_a_storage_node_that_needs_the_block(
    tmp_path: Path, autojump_clock: object
) -> None:
    # rpc_timeout=60: n2's own fetch is due 2 × 60 s after its incref, after the
    # deletion checks of n0 and n1 (gc_delay + 10 s): they must hand the block over.
    async with open_cluster(tmp_path, n=3, gc_delay=60.0, rpc_timeout=60.0) as cluster:
        await cluster.stop("n2")
        h = await cluster.nodes["n0"].put_block(b"offload me" * 100)
        n0, n1 = cluster.nodes["n0"], cluster.nodes["n1"]
        n0.incref(h)
        n0.decref(h)  # n0 no longer needs it
        n1.incref(h)
        n1.decref(h)
        n2 = await cluster.start("n2")
        n2.incref(h)  # n2 needs it and has no copy
        await trio.sleep(60 + 10 + 1)
        assert await n2.has_local_block(h)
        assert n0.metrics.resync_sent + n1.metrics.resync_sent >= 1
        await trio.sleep(120)
        assert not await n0.has_local_block(h)
        assert not await n1.has_local_block(h)
        assert await n2.get_block(h) == b"offload me" * 100


async def test_deletion_waits_while_peers_cannot_be_asked(
    tmp_path: Path, autojump_clock: object
) -> None:
    async with open_cluster(tmp_path, n=3, gc_delay=60.0, resync_retry_delay=30.0) as cluster:
        n0 = cluster.nodes["n0"]
        h = await n0.put_block(b"keep me until peers answer" * 10)
        n0.incref(h)
        n0.decref(h)
        cluster.net.partition(["n0"], ["n1", "n2"])
        await trio.sleep(60 + 10 + 5)
        assert await n0.has_local_block(h)
        assert [e.hash for e in n0.list_resync_errors()] == [h]
        cluster.net.heal()
        await trio.sleep(120)
        assert not await n0.has_local_block(h)
        assert n0.resync_errors_len() == 0


async def test_backpressure_bounds_bytes_in_flight(tmp_path: Path, autojump_clock: object) -> None:
    budget = 256 * 1024
    async with open_cluster(tmp_path, n=3, ram_buffer_max=budget) as cluster:
        n0 = cluster.nodes["n0"]
        cluster.net.set_delay("n2", 1.0)
        peak = 0

        async def watch() -> None:
            nonlocal peak
            while True:
                peak = max(peak, n0.buffer_in_use())
                await trio.sleep(0.01)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            async with trio.open_nursery() as puts:
                for _ in range(16):
                    data = os.urandom(64 * 1024)  # incompressible: 64 KiB per replica
                    puts.start_soon(n0.rpc_put_block, blake2sum(data), data)
            nursery.cancel_scope.cancel()
        # Each put holds 2 × 64 KiB (two remote replicas): at most two at a time fit.
        assert 2 * 64 * 1024 <= peak <= budget


@pytest.mark.parametrize("transport", ["memory", "tcp"])
async def test_cluster_put_get_failover(tmp_path: Path, transport: str) -> None:
    async with open_cluster(
        tmp_path, n=3, transport=transport, rpc_timeout=5.0, need_block_query_timeout=2.0
    ) as cluster:
        data = b"over " + transport.encode() * 1000
        h = await cluster.nodes["n0"].put_block(data)
        assert await cluster.nodes["n1"].get_block(h) == data
        await cluster.stop("n1")
        h2 = await cluster.nodes["n0"].put_block(data + b"2")
        assert await cluster.nodes["n2"].get_block(h2) == data + b"2"
        n1 = await cluster.start("n1")
        assert await n1.get_block(h2) == data + b"2"


async def test_wrong_secret_node_cannot_join(tmp_path: Path, autojump_clock: object) -> None:
    async with open_cluster(tmp_path, n=3) as cluster:
        intruder = cluster.config("n2")
        assert intruder.rpc_secret == b"test"
        await cluster.stop("n2")
        cluster.rpc_secret = b"wrong"
        await cluster.start("n2")
        with pytest.raises(QuorumError):
            # n2 cannot authenticate to n0/n1 and they refuse it: only n2's own write counts.
            await cluster.nodes["n2"].put_block(b"from an impostor")
        h = blake2sum(b"from an impostor")
        assert not await cluster.nodes["n0"].has_local_block(h)
        assert not await cluster.nodes["n1"].has_local_block(h)


async def test_corrupt_reply_from_peer_is_rejected(tmp_path: Path, autojump_clock: object) -> None:
    async with open_cluster(tmp_path, n=3) as cluster:
        await cluster.stop("n2")
        data = b"served corrupt" * 100
        h = await cluster.nodes["n0"].put_block(data)
        n2 = await cluster.start("n2")
        cluster.net.corrupt_next("n0", n=1)
        cluster.net.corrupt_next("n1", n=1)
        with pytest.raises((CorruptBlockError, MissingBlockError)):
            await n2.get_block(h)
        assert await n2.get_block(h) == data


async def test_stream_falls_back_to_a_peer_when_the_local_copy_is_corrupt(
    tmp_path: Path, autojump_clock: object
) -> None:
    async with open_cluster(tmp_path, n=3) as cluster:
        data = b"stream me from elsewhere" * 1000
        n0 = cluster.nodes["n0"]
        h = await n0.put_block(data)
        await trio.testing.wait_all_tasks_blocked()
        for bm in cluster.nodes.values():
            bm.incref(h)
        path = await n0.local_block_path(h)
        assert path is not None
        raw = bytearray(path.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        path.write_bytes(bytes(raw))
        async with n0.stream_block(h) as chunks:
            assert b"".join([c async for c in chunks]) == data
        assert n0.metrics.corruptions == 1
        assert path.with_name(path.name + ".corrupted").exists()
        await trio.sleep(1)  # read repair: n0 stores a good copy again
        assert await local_copy_is_valid(n0, h, data)


async def test_stream_survives_the_local_copy_vanishing_before_it_is_opened(
    tmp_path: Path, autojump_clock: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trioblock._storage.blockfiles import BlockStore

    real_open_stream = BlockStore.open_stream

    def open_stream(self: BlockStore, loc: Any) -> Any:
        # A scrub quarantines the copy between the lookup and the open.
        os.rename(loc.path, loc.path.with_name(loc.path.name + ".corrupted"))
        return real_open_stream(self, loc)

    async with open_cluster(tmp_path, n=3) as cluster:
        data = b"quarantined under my feet" * 1000
        n0 = cluster.nodes["n0"]
        h = await n0.put_block(data)
        await trio.testing.wait_all_tasks_blocked()
        monkeypatch.setattr(BlockStore, "open_stream", open_stream)
        async with n0.stream_block(h) as chunks:
            assert b"".join([c async for c in chunks]) == data
