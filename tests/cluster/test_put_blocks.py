"""``put_blocks``: many blocks in one call, each with ``put_block``'s guarantees (durable
on a write quorum before its hash is returned), a clear report of the blocks that
failed, and nothing half-done on cancellation. Through the public API, in virtual time
(the testing kit's cluster) and on an embedded node."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import trio

import trioblock
from trioblock import PutBatchError, QuorumError, blake2sum
from trioblock.testing import open_cluster


def blocks(n: int, tag: str = "batch") -> list[bytes]:
    return [f"{tag} block {i} ".encode() * 150 for i in range(n)]


def subdir(data: bytes) -> str:
    """The ``aa/bb`` directory of a block (below a data directory)."""
    hexa = blake2sum(data).hex()
    return f"{hexa[:2]}/{hexa[2:4]}"


async def held_by(cluster: object, data: bytes) -> list[str]:
    """The running nodes holding a copy of ``data``."""
    nodes = cluster.nodes  # type: ignore[attr-defined]
    return [n for n, bm in sorted(nodes.items()) if await bm.has_local_block(blake2sum(data))]


async def test_hashes_come_back_in_order_and_every_block_is_on_every_node(
    tmp_path: Path, autojump_clock: object
) -> None:
    datas = blocks(40)  # more than one PutBlocks request per node
    async with (
        open_cluster(tmp_path, n=3, disk="simulated", data_fsync=True) as cluster,
        cluster.open_gateway("app") as gw,
    ):
        await trio.sleep(1)  # the gateway's first layout exchanges are done
        stats = gw.rpc_stats()
        assert stats is not None
        sent = stats.requests
        hashes = await gw.put_blocks(datas)
        assert hashes == [blake2sum(d) for d in datas]
        # At its return every block is durable on a write quorum (2 of 3) already.
        for data in datas:
            assert len(await held_by(cluster, data)) >= 2
        await trio.sleep(1)  # the copies beyond the quorum land too
        # Three requests per node (16 + 16 + 8 blocks), not one per block.
        assert stats.requests - sent == 3 * 3
        for data in datas:
            assert await held_by(cluster, data) == ["n0", "n1", "n2"]
            assert await gw.get_block(blake2sum(data)) == data
        for node_id in cluster.node_ids:
            assert cluster.nodes[node_id].metrics.puts_served == 40
            # Written in groups, not one trip per block.
            assert cluster.nodes[node_id].metrics.write_trips < 40
        # Durable as acknowledged: every copy survives a power cut of its node.
        for node_id in cluster.node_ids:
            await cluster.power_loss(node_id, "drop")
            for data in datas:
                assert await cluster.nodes[node_id].has_local_block(blake2sum(data))


async def test_a_block_given_twice_is_stored_once_and_its_hash_returned_at_each_place(
    tmp_path: Path, autojump_clock: object
) -> None:
    a, b = blocks(2, "twice")
    async with (
        open_cluster(tmp_path, n=3, disk="simulated") as cluster,
        cluster.open_gateway("app") as gw,
    ):
        assert await gw.put_blocks([a, b, bytearray(a), memoryview(a)]) == [
            blake2sum(a),
            blake2sum(b),
            blake2sum(a),
            blake2sum(a),
        ]
        await trio.sleep(1)
        for node_id in cluster.node_ids:
            assert cluster.nodes[node_id].metrics.puts_served == 2
            assert await cluster.nodes[node_id].get_block(blake2sum(a)) == a


async def test_an_empty_batch_returns_at_once_and_sends_nothing(
    tmp_path: Path, autojump_clock: object
) -> None:
    async with (
        open_cluster(tmp_path, n=3) as cluster,
        cluster.open_gateway("app") as gw,
    ):
        before = gw.rpc_stats()
        assert before is not None
        sent = before.requests
        assert await gw.put_blocks([]) == []
        assert await gw.put_blocks(iter(())) == []
        after = gw.rpc_stats()
        assert after is not None and after.requests == sent


async def test_with_a_node_down_the_quorum_is_still_met(
    tmp_path: Path, autojump_clock: object
) -> None:
    datas = blocks(20, "one down")
    async with (
        open_cluster(tmp_path, n=3, disk="simulated") as cluster,
        cluster.open_gateway("app") as gw,
    ):
        await cluster.stop("n2")
        assert await gw.put_blocks(datas) == [blake2sum(d) for d in datas]
        for data in datas:
            assert await held_by(cluster, data) == ["n0", "n1"]


async def test_with_two_nodes_down_every_block_is_reported_failed(
    tmp_path: Path, autojump_clock: object
) -> None:
    datas = blocks(20, "two down")
    async with (
        open_cluster(tmp_path, n=3, disk="simulated") as cluster,
        cluster.open_gateway("app") as gw,
    ):
        await cluster.stop("n1")
        await cluster.stop("n2")
        with pytest.raises(PutBatchError) as caught:
            await gw.put_blocks([*datas, datas[0]])
        exc = caught.value
        assert exc.hashes == [blake2sum(d) for d in [*datas, datas[0]]]
        assert sorted(exc.failed) == list(range(21))
        assert exc.succeeded == []
        assert exc.failed_hashes == [blake2sum(d) for d in datas]
        for error in exc.failed.values():
            assert isinstance(error, QuorumError)
            # Failed as soon as two of three failed (n0's answer not waited for).
            assert error.successes <= 1 and error.quorum == 2
            assert sorted(error.errors) == ["n1", "n2"]
        assert "21 of 21 block(s) failed" in str(exc)


async def test_a_block_two_nodes_fail_to_write_fails_alone(
    tmp_path: Path, autojump_clock: object
) -> None:
    datas = blocks(24, "one fails")
    victim = 13
    async with (
        open_cluster(tmp_path, n=3, disk="simulated", data_fsync=True) as cluster,
        cluster.open_gateway("app") as gw,
    ):
        for node_id in ("n1", "n2"):
            cluster.disk(node_id).fail("write", f"{subdir(datas[victim])}/*", times=None)
        with pytest.raises(PutBatchError) as caught:
            await gw.put_blocks(datas)
        exc = caught.value
        assert list(exc.failed) == [victim]
        error = exc.failed[victim]
        assert isinstance(error, QuorumError) and sorted(error.errors) == ["n1", "n2"]
        assert exc.succeeded == [blake2sum(d) for i, d in enumerate(datas) if i != victim]
        await trio.sleep(1)
        for i, data in enumerate(datas):
            expected = ["n0"] if i == victim else ["n0", "n1", "n2"]
            assert await held_by(cluster, data) == expected
        for node_id in ("n1", "n2"):
            assert not [p for p in cluster.disk(node_id).files() if ".tmp" in p]


async def test_a_block_one_node_fails_to_write_still_reaches_its_quorum(
    tmp_path: Path, autojump_clock: object
) -> None:
    datas = blocks(24, "one node fails one")
    victim = 5
    async with (
        open_cluster(tmp_path, n=3, disk="simulated", data_fsync=True) as cluster,
        cluster.open_gateway("app") as gw,
    ):
        cluster.disk("n1").fail("write", f"{subdir(datas[victim])}/*", times=None)
        assert await gw.put_blocks(datas) == [blake2sum(d) for d in datas]
        await trio.sleep(1)
        assert await held_by(cluster, datas[victim]) == ["n0", "n2"]
        for i, data in enumerate(datas):
            if i != victim:
                assert await held_by(cluster, data) == ["n0", "n1", "n2"]


async def test_peers_that_do_not_know_put_blocks_get_one_put_per_block(
    tmp_path: Path, autojump_clock: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trioblock._node.endpoint import RpcEndpoint

    # Nodes of a version before PutBlocks: they refuse the message as unknown.
    monkeypatch.delattr(RpcEndpoint, "rpc_put_blocks")
    datas = blocks(20, "old peers")
    async with (
        open_cluster(tmp_path, n=3, disk="simulated") as cluster,
        cluster.open_gateway("app") as gw,
    ):
        assert await gw.put_blocks(datas) == [blake2sum(d) for d in datas]
        await trio.sleep(1)
        for data in datas:
            assert await held_by(cluster, data) == ["n0", "n1", "n2"]
        more = blocks(20, "old peers, later")
        stats = gw.rpc_stats()
        assert stats is not None
        sent = stats.requests
        assert await gw.put_blocks(more) == [blake2sum(d) for d in more]
        await trio.sleep(1)
        # Remembered: one PutBlock per block and node, without trying PutBlocks again.
        assert stats.requests - sent == 20 * 3
        for data in more:
            assert await held_by(cluster, data) == ["n0", "n1", "n2"]
            assert await gw.get_block(blake2sum(data)) == data


async def test_a_cancelled_batch_leaves_every_block_whole(
    tmp_path: Path, autojump_clock: object
) -> None:
    datas = blocks(40, "cancelled")
    async with (
        open_cluster(tmp_path, n=3, disk="simulated", data_fsync=True) as cluster,
        cluster.open_gateway("app") as gw,
    ):
        cluster.net.set_delay("n1", 0.5)
        cluster.net.set_delay("n2", 0.5)
        with trio.move_on_after(0.7) as scope:
            await gw.put_blocks(datas)
        assert scope.cancelled_caught
        # The sends under way went on in the gateway (as a put_block's do): every block
        # ends up whole on every node, and no temp file is left.
        cluster.net.set_delay("n1", 0)
        cluster.net.set_delay("n2", 0)
        await trio.sleep(10)
        for data in datas:
            assert await held_by(cluster, data) == ["n0", "n1", "n2"]
            assert await gw.get_block(blake2sum(data)) == data
        for node_id in cluster.node_ids:
            assert not [p for p in cluster.disk(node_id).files() if ".tmp" in p]
        assert gw.buffer_in_use() == 0
        # Putting them again works and is harmless.
        assert await gw.put_blocks(datas) == [blake2sum(d) for d in datas]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (b"one block", "not one block"),
        ("text", "not one block"),
        (42, "not int"),
        ([b"fine", "text"], "block 1 of put_blocks: a block is bytes, not str"),
        ([b"fine", None], "block 1 of put_blocks: a block is bytes"),
    ],
)
async def test_bad_input_is_a_clear_type_error_and_stores_nothing(
    tmp_path: Path, autojump_clock: object, value: object, message: str
) -> None:
    async with (
        open_cluster(tmp_path, n=3) as cluster,
        cluster.open_gateway("app") as gw,
    ):
        with pytest.raises(TypeError, match=message):
            await gw.put_blocks(value)  # type: ignore[arg-type]
        assert not await cluster.nodes["n0"].has_local_block(blake2sum(b"fine"))


async def test_an_oversized_block_is_a_value_error_and_stores_nothing(
    tmp_path: Path, autojump_clock: object
) -> None:
    async with (
        open_cluster(tmp_path, n=3, max_block_size=1024) as cluster,
        cluster.open_gateway("app") as gw,
    ):
        with pytest.raises(ValueError, match=r"block 1 of put_blocks: .*exceeds max_block_size"):
            await gw.put_blocks([b"small", bytes(2048)])
        await trio.sleep(1)
        assert not await cluster.nodes["n0"].has_local_block(blake2sum(b"small"))


def _config(tmp_path: Path, **kw: object) -> trioblock.Config:
    return trioblock.Config(node_id="n", metadata_dir=tmp_path / "m", data_dir=tmp_path / "d", **kw)  # type: ignore[arg-type]


async def test_an_embedded_node_writes_its_batch_in_one_group(tmp_path: Path) -> None:
    datas = blocks(20, "embedded")
    async with trioblock.open_block_manager(_config(tmp_path, data_fsync=True)) as bm:
        trips = bm.metrics.write_trips
        assert await bm.put_blocks(datas) == [blake2sum(d) for d in datas]
        assert bm.metrics.write_trips == trips + 1
        for data in datas:
            assert await bm.get_block(blake2sum(data)) == data
        assert await bm.put_blocks(datas) == [blake2sum(d) for d in datas]  # kept
        assert await bm.put_blocks([b"x" * 10, b"y"], compress=False) == [
            blake2sum(b"x" * 10),
            blake2sum(b"y"),
        ]
        assert bm.buffer_in_use() == 0


async def test_a_storage_node_with_peers_counts_its_own_write_in_the_quorum(
    tmp_path: Path, autojump_clock: object
) -> None:
    datas = blocks(20, "from a storage node")
    async with open_cluster(tmp_path, n=3, disk="simulated") as cluster:
        await cluster.stop("n2")
        n0 = cluster.nodes["n0"]
        assert await n0.put_blocks(datas) == [blake2sum(d) for d in datas]
        for data in datas:
            assert await held_by(cluster, data) == ["n0", "n1"]
        await cluster.stop("n1")
        with pytest.raises(PutBatchError) as caught:
            await n0.put_blocks(blocks(3, "alone"))
        assert sorted(caught.value.failed) == [0, 1, 2]


async def test_a_node_storing_alone_reports_the_disk_error_of_the_block_it_failed(
    tmp_path: Path, autojump_clock: object
) -> None:
    datas = blocks(12, "alone")
    victim = 4
    async with open_cluster(tmp_path, n=1, disk="simulated", data_fsync=True) as cluster:
        bm = cluster.nodes["n0"]
        cluster.disk("n0").fail("write", f"{subdir(datas[victim])}/*", times=None)
        with pytest.raises(PutBatchError) as caught:
            await bm.put_blocks(datas)
        exc = caught.value
        assert list(exc.failed) == [victim]
        assert isinstance(exc.failed[victim], trioblock.DiskError)
        assert exc.succeeded == [blake2sum(d) for i, d in enumerate(datas) if i != victim]
        for i, data in enumerate(datas):
            assert await bm.has_local_block(blake2sum(data)) == (i != victim)
        assert not [p for p in cluster.disk("n0").files() if ".tmp" in p]
        assert bm.buffer_in_use() == 0


async def test_a_small_block_size_limit_still_takes_batches_of_4_mib(
    tmp_path: Path, autojump_clock: object, caplog: pytest.LogCaptureFixture
) -> None:
    """Regression: with ``max_block_size`` of 1 MiB a node refused any body over 2 MiB,
    so a ``PutBlocks`` of 4 MiB was a protocol error (logged as an attack) and the
    sender fell back to one ``PutBlock`` per block for ten minutes."""
    datas = [random.Random(i).randbytes(256 * 1024) for i in range(16)]  # incompressible
    async with (
        open_cluster(tmp_path, n=1, max_block_size=1 << 20) as cluster,
        cluster.open_gateway("app") as gw,
    ):
        stats = gw.rpc_stats()
        assert stats is not None
        sent = stats.requests
        assert await gw.put_blocks(datas) == [blake2sum(d) for d in datas]
        # 15 blocks (under 4 MiB), then the last: a few requests, not one per block.
        assert stats.requests - sent <= 4
        assert not [r for r in caplog.records if "protocol error" in r.getMessage()]
        for data in datas:
            assert await cluster.nodes["n0"].get_block(blake2sum(data)) == data
