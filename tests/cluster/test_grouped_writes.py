"""A node writes the blocks that wait at the same moment in one worker-thread trip, with
one fsync per directory touched: every block still has its own outcome. Through the
public API, in virtual time (the testing kit's cluster)."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from trioblock import QuorumError, blake2sum
from trioblock.testing import open_cluster

N_BLOCKS = 24


def blocks(n: int, tag: str = "grouped") -> list[bytes]:
    return [f"{tag} block {i} ".encode() * 200 for i in range(n)]


def subdir(data: bytes) -> str:
    """The ``aa/bb`` directory of a block (below a data directory)."""
    hexa = blake2sum(data).hex()
    return f"{hexa[:2]}/{hexa[2:4]}"


def two_in_one_directory() -> tuple[bytes, bytes]:
    """Two blocks whose files go to the same ``aa/bb`` directory."""
    seen: dict[str, bytes] = {}
    i = 0
    while True:
        data = f"same directory {i} ".encode() * 200
        where = subdir(data)
        if where in seen:
            return seen[where], data
        seen[where] = data
        i += 1


async def put_all(put: object, datas: list[bytes]) -> dict[bytes, object]:
    """Every put at once: each data's hash, or the exception its put raised."""
    results: dict[bytes, object] = {}

    async def one(data: bytes) -> None:
        try:
            results[data] = await put(data)  # type: ignore[operator]
        except QuorumError as exc:
            results[data] = exc

    async with trio.open_nursery() as nursery:
        for data in datas:
            nursery.start_soon(one, data)
    return results


async def test_concurrent_puts_are_written_in_groups_and_every_block_reads_back(
    tmp_path: Path, autojump_clock: object
) -> None:
    async with (
        open_cluster(tmp_path, n=3, disk="simulated", data_fsync=True) as cluster,
        cluster.open_gateway("app") as gw,
    ):
        datas = blocks(N_BLOCKS)
        results = await put_all(gw.put_block, datas)
        await trio.sleep(1)  # the copies beyond the quorum land too
        for node_id, bm in cluster.nodes.items():
            assert bm.metrics.puts_served == N_BLOCKS
            # Fewer trips than blocks: writes that waited together were written together.
            assert 0 < bm.metrics.write_trips < N_BLOCKS, node_id
            for data in datas:
                assert await bm.has_local_block(results[data])  # type: ignore[arg-type]
        for data in datas:
            assert await gw.get_block(results[data]) == data  # type: ignore[arg-type]
        # Durable as acknowledged: every copy survives a power cut of its node.
        for node_id in cluster.node_ids:
            await cluster.power_loss(node_id, "drop")
            for data in datas:
                assert await cluster.nodes[node_id].has_local_block(blake2sum(data))


async def test_a_failed_block_write_in_a_group_fails_that_block_only(
    tmp_path: Path, autojump_clock: object
) -> None:
    datas = blocks(N_BLOCKS, "one fails")
    victim = datas[N_BLOCKS // 2]
    async with (
        open_cluster(tmp_path, n=3, disk="simulated", data_fsync=True) as cluster,
        cluster.open_gateway("app") as gw,
    ):
        for node_id in ("n1", "n2"):  # two of three: the victim's put loses its quorum
            cluster.disk(node_id).fail("write", f"{subdir(victim)}/*", times=None)
        results = await put_all(gw.put_block, datas)
        await trio.sleep(1)
        assert isinstance(results[victim], QuorumError)
        for data in datas:
            if data is not victim:
                assert results[data] == blake2sum(data)
                for bm in cluster.nodes.values():
                    assert await bm.has_local_block(blake2sum(data))
        for node_id in ("n1", "n2"):
            bm = cluster.nodes[node_id]
            assert bm.metrics.write_trips < N_BLOCKS  # the victim was written in a group
            assert not await bm.has_local_block(blake2sum(victim))
            assert not [p for p in cluster.disk(node_id).files() if ".tmp" in p]
        assert await cluster.nodes["n0"].has_local_block(blake2sum(victim))


async def test_a_failed_directory_fsync_fails_the_blocks_of_that_directory_only(
    tmp_path: Path, autojump_clock: object
) -> None:
    first, second = two_in_one_directory()
    datas = [*blocks(N_BLOCKS, "fsync fails"), first, second]
    async with (
        open_cluster(tmp_path, n=3, disk="simulated", data_fsync=True) as cluster,
        cluster.open_gateway("app") as gw,
    ):
        for node_id in ("n1", "n2"):
            cluster.disk(node_id).fail("fsync", subdir(first), times=None)
        results = await put_all(gw.put_block, datas)
        await trio.sleep(1)
        assert isinstance(results[first], QuorumError)
        assert isinstance(results[second], QuorumError)
        others = [d for d in datas if subdir(d) != subdir(first)]
        assert len(others) >= N_BLOCKS - 1
        for data in others:
            assert results[data] == blake2sum(data)
            for bm in cluster.nodes.values():
                assert await bm.has_local_block(blake2sum(data))
        for node_id in ("n1", "n2"):
            assert cluster.nodes[node_id].metrics.write_trips < len(datas)
        # What was acknowledged survives a power cut that drops every unsynced change.
        for node_id in ("n1", "n2"):
            await cluster.power_loss(node_id, "drop")
            for data in others:
                assert await cluster.nodes[node_id].has_local_block(blake2sum(data))


@pytest.mark.parametrize("data_fsync", [True, False])
async def test_a_block_put_twice_at_once_is_written_once(
    tmp_path: Path, autojump_clock: object, data_fsync: bool
) -> None:
    async with (
        open_cluster(tmp_path, n=3, disk="simulated", data_fsync=data_fsync) as cluster,
        cluster.open_gateway("app") as gw,
    ):
        datas = blocks(8, "twice")
        results = await put_all(gw.put_block, datas + [bytes(d) for d in datas])
        await trio.sleep(1)
        for data in datas:
            assert results[data] == blake2sum(data)
            for bm in cluster.nodes.values():
                assert await bm.has_local_block(blake2sum(data))


async def test_a_put_blocks_with_a_wrong_hash_stores_none_of_that_block(
    tmp_path: Path, autojump_clock: object
) -> None:
    """A peer's ``PutBlocks`` (puts to one node, coalesced) with one block whose bytes
    do not match its hash: that block is answered ``corrupt`` and nothing of it is
    stored; the others are stored."""
    from trioblock._core.block import encode_block
    from trioblock._net.rpc import RpcNode
    from trioblock.errors import CorruptBlockError

    async with open_cluster(tmp_path, n=3, disk="simulated", data_fsync=True) as cluster:
        client = RpcNode("intruder", cluster.net.transport("intruder"), cluster.rpc_secret)
        datas = blocks(12, "peer")
        items = [(blake2sum(d), encode_block(d, 1)) for d in datas]
        bad = 5
        items[bad] = (items[bad][0], encode_block(b"not what the hash says", 1))
        outcomes: dict[int, object] = {}

        async def one(i: int) -> None:
            try:
                await client.put_block("n1", items[i][0], items[i][1])
                outcomes[i] = None
            except CorruptBlockError as exc:
                outcomes[i] = exc

        try:
            async with trio.open_nursery() as nursery:
                for i in range(len(items)):
                    nursery.start_soon(one, i)
        finally:
            await client.aclose()
        assert client.puts.batches_sent >= 1
        assert isinstance(outcomes[bad], CorruptBlockError)
        assert [outcomes[i] for i in range(len(items)) if i != bad] == [None] * 11
        n1 = cluster.nodes["n1"]
        assert not await n1.has_local_block(items[bad][0])
        hexa = items[bad][0].hex()
        assert not [p for p in cluster.disk("n1").files() if hexa in p]
        for i, data in enumerate(datas):
            if i != bad:
                assert await n1.get_block(blake2sum(data)) == data
