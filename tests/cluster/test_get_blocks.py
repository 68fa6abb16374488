"""``get_blocks``: many blocks in few exchanges, from gateways and storage nodes, with the
guarantees of ``get_block`` for each block."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import trio
import trio.testing

from trioblock import BlockManager, CorruptBlockError, Hash, MissingBlockError, blake2sum
from trioblock.testing import Cluster, open_cluster

RNG = random.Random(11)
DATA = [RNG.randbytes(200 + 37 * i) + b"text " * i for i in range(40)]


async def put_all(bm: BlockManager, data: list[bytes]) -> list[Hash]:
    hashes = [await bm.put_block(d) for d in data]
    await trio.testing.wait_all_tasks_blocked()  # the third copies land
    return hashes


def first_node(cluster: Cluster, h: Hash) -> str:
    return cluster.layout.read_nodes(h)[0]


async def test_a_gateway_gets_many_blocks_in_order_with_repeats(
    tmp_path: Path, autojump_clock: object
) -> None:
    async with open_cluster(tmp_path, n=3) as cluster, cluster.open_gateway("app") as gw:
        hashes = await put_all(gw, DATA)
        asked = hashes[::-1] + hashes[:5] + [hashes[3]]
        stats = gw.rpc_stats()
        assert stats is not None
        requests = stats.requests
        got = await gw.get_blocks(asked)
        assert got == [DATA[hashes.index(h)] for h in asked]
        # One request per node that is first in some block's read order (at most 3).
        assert stats.requests - requests <= 3
        assert await gw.get_blocks([]) == []
        assert gw.metrics.gets >= len(asked)


async def test_a_missing_block_fails_the_call_with_missing_block_error(
    tmp_path: Path, autojump_clock: object
) -> None:
    async with open_cluster(tmp_path, n=3) as cluster, cluster.open_gateway("app") as gw:
        hashes = await put_all(gw, DATA[:6])
        absent = blake2sum(b"never stored")
        with pytest.raises(MissingBlockError) as info:
            await gw.get_blocks([*hashes[:3], absent, *hashes[3:]])
        assert info.value.hash == absent
        # The nodes were each asked: the message names them.
        assert all(n in str(info.value) for n in ("n0", "n1", "n2"))
        with pytest.raises(ValueError):
            await gw.get_blocks([b"short"])


async def test_a_node_down_is_replaced_by_the_next_ones(
    tmp_path: Path, autojump_clock: object
) -> None:
    async with open_cluster(tmp_path, n=3) as cluster, cluster.open_gateway("app") as gw:
        hashes = await put_all(gw, DATA)
        down = first_node(cluster, hashes[0])
        await cluster.kill(down)
        stats = gw.rpc_stats()
        assert stats is not None
        before = stats.requests
        assert await gw.get_blocks(hashes) == DATA
        firsts = sum(1 for h in hashes if first_node(cluster, h) == down)
        assert firsts > 6
        # The down node's blocks went to their next nodes batched, not one by one.
        assert stats.requests - before <= 6


async def test_a_node_serving_corrupt_data_is_reported_and_the_next_one_asked(
    tmp_path: Path, autojump_clock: object
) -> None:
    async with open_cluster(tmp_path, n=3) as cluster, cluster.open_gateway("app") as gw:
        hashes = await put_all(gw, DATA[:10])
        bad = hashes[4]
        server = first_node(cluster, bad)
        path = await cluster.nodes[server].local_block_path(bad)
        assert path is not None
        path.write_bytes(b"not the block at all")
        got = await gw.get_blocks(hashes)
        assert got == DATA[:10]
        assert gw.metrics.corruptions == 1
        await trio.testing.wait_all_tasks_blocked()
        # The report made the server check its copy: quarantined, counted, re-fetched.
        assert cluster.nodes[server].metrics.corruptions == 1
        assert path.with_name(path.name + ".corrupted").exists()


async def test_every_copy_corrupt_is_corrupt_block_error(
    tmp_path: Path, autojump_clock: object
) -> None:
    async with open_cluster(tmp_path, n=3) as cluster, cluster.open_gateway("app") as gw:
        hashes = await put_all(gw, DATA[:3])
        for bm in cluster.nodes.values():
            path = await bm.local_block_path(hashes[1])
            assert path is not None
            path.write_bytes(b"garbage")
        with pytest.raises(CorruptBlockError) as info:
            await gw.get_blocks(hashes)
        assert info.value.hash == hashes[1]


async def test_peers_that_do_not_know_get_blocks_are_asked_block_by_block(
    tmp_path: Path, autojump_clock: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trioblock._node.endpoint import RpcEndpoint

    monkeypatch.delattr(RpcEndpoint, "rpc_get_blocks")  # every node answers as an old one
    async with open_cluster(tmp_path, n=3) as cluster, cluster.open_gateway("app") as gw:
        hashes = await put_all(gw, DATA[:12])
        stats = gw.rpc_stats()
        assert stats is not None
        before = stats.requests
        assert await gw.get_blocks(hashes) == DATA[:12]
        assert stats.requests - before >= 12  # one GetBlock per block
        before = stats.requests
        assert await gw.get_blocks(hashes[:2]) == DATA[:2]
        assert stats.requests - before == 2  # remembered: no batch tried again


async def test_a_storage_node_reads_local_copies_and_fetches_the_others(
    tmp_path: Path, autojump_clock: object
) -> None:
    async with open_cluster(tmp_path, n=3, replication_factor=2, write_quorum=2) as cluster:
        n0 = cluster.nodes["n0"]
        hashes = await put_all(cluster.nodes["n1"], DATA)
        held = [h for h in hashes if "n0" in cluster.layout.storage_nodes(h)]
        assert held and len(held) < len(hashes)
        assert await n0.get_blocks(hashes) == DATA
        assert not any([await n0.has_local_block(h) for h in hashes if h not in held])


async def test_a_corrupt_local_copy_is_quarantined_and_read_from_a_peer(
    tmp_path: Path, autojump_clock: object
) -> None:
    async with open_cluster(tmp_path, n=3) as cluster:
        n0 = cluster.nodes["n0"]
        hashes = await put_all(n0, DATA[:8])
        path = await n0.local_block_path(hashes[2])
        assert path is not None
        path.write_bytes(b"rotten")
        assert await n0.get_blocks(hashes) == DATA[:8]
        assert n0.metrics.corruptions == 1
        assert path.with_name(path.name + ".corrupted").exists()


async def test_a_block_this_node_should_hold_is_repaired(
    tmp_path: Path, autojump_clock: object
) -> None:
    async with open_cluster(tmp_path, n=3) as cluster:
        n0 = cluster.nodes["n0"]
        hashes = await put_all(n0, DATA[:5])
        for h in hashes:
            await n0.add_reference(h, "app/snap")
        path = await n0.local_block_path(hashes[3])
        assert path is not None
        path.unlink()
        assert await n0.get_blocks(hashes) == DATA[:5]
        await trio.testing.wait_all_tasks_blocked()
        assert await n0.has_local_block(hashes[3])


async def test_a_cancelled_call_leaves_nothing_half_done(
    tmp_path: Path, autojump_clock: object
) -> None:
    async with open_cluster(tmp_path, n=3) as cluster, cluster.open_gateway("app") as gw:
        hashes = await put_all(gw, DATA)
        for node in cluster.nodes:
            cluster.net.set_delay(node, 5.0)
        with trio.move_on_after(1.0) as scope:
            await gw.get_blocks(hashes)
        assert scope.cancelled_caught
        for node in cluster.nodes:
            cluster.net.set_delay(node, 0.0)
        assert await gw.get_blocks(hashes) == DATA
        assert gw.metrics.corruptions == 0


async def test_a_small_block_size_limit_still_takes_replies_of_4_mib(
    tmp_path: Path, autojump_clock: object
) -> None:
    """Regression: a reply carries up to 4 MiB of blocks plus one, but a node with a
    ``max_block_size`` of 1 MiB refused any body over 2 MiB: every block of the call
    was reported missing (a ProtocolError from each node), though all were stored."""
    datas = [random.Random(i).randbytes(256 * 1024) for i in range(16)]  # incompressible
    async with (
        open_cluster(tmp_path, n=1, max_block_size=1 << 20) as cluster,
        cluster.open_gateway("app") as gw,
    ):
        hashes = [await gw.put_block(d) for d in datas]
        stats = gw.rpc_stats()
        assert stats is not None
        sent = stats.requests
        assert await gw.get_blocks(hashes) == datas
        assert stats.requests - sent == 1  # under 4 MiB of blocks and one more: all 16
