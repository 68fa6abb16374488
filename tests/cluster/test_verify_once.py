"""One verification per transfer: peers serve stored bytes as they are, the requester
verifies them and reports a corrupt copy back to its sender, which checks and
quarantines it. A peer can never make a node keep or return bytes that do not match."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from trioblock import BlockManager, CorruptBlockError, Hash, MissingBlockError
from trioblock.testing import Cluster, open_cluster


async def _corrupt_copy(bm: BlockManager, h: Hash) -> Path:
    path = await bm.local_block_path(h)
    assert path is not None
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x40
    path.write_bytes(bytes(raw))
    return path


async def _without_local_copy(cluster: Cluster, h: Hash) -> tuple[str, list[str]]:
    """A node holding no copy of ``h`` (its copy removed) and its peers in read order."""
    reader = cluster.layout.read_nodes(h)[-1]
    path = await cluster.nodes[reader].local_block_path(h)
    if path is not None:
        path.unlink()
    peers = [n for n in cluster.layout.read_nodes(h) if n != reader]
    return reader, peers


async def test_corrupt_copy_on_a_peer_is_reported_and_quarantined_there(
    tmp_path: Path, autojump_clock: object
) -> None:
    async with open_cluster(tmp_path, n=3) as cluster:
        data = b"rotten on the first peer" * 500
        h = await cluster.nodes["n0"].put_block(data)
        await trio.sleep(1)  # every copy written
        reader, peers = await _without_local_copy(cluster, h)
        sender = cluster.nodes[peers[0]]
        bad = await _corrupt_copy(sender, h)
        assert await cluster.nodes[reader].get_block(h) == data  # from the next peer
        assert cluster.nodes[reader].metrics.corruptions == 1
        await trio.sleep(1)  # the report reaches the sender in the background
        assert sender.metrics.corruptions == 1
        assert bad.with_name(bad.name + ".corrupted").exists()
        assert not bad.exists()


async def test_streamed_corrupt_copy_from_a_peer_is_reported(
    tmp_path: Path, autojump_clock: object
) -> None:
    async with open_cluster(tmp_path, n=3) as cluster:
        data = b"streamed rot" * 5000
        h = await cluster.nodes["n0"].put_block(data)
        await trio.sleep(1)
        reader, peers = await _without_local_copy(cluster, h)
        sender = cluster.nodes[peers[0]]
        bad = await _corrupt_copy(sender, h)
        async with cluster.nodes[reader].stream_block(h) as chunks:
            # Nothing was delivered before the corruption showed: the next peer takes over.
            assert b"".join([c async for c in chunks]) == data
        await trio.sleep(1)
        assert sender.metrics.corruptions == 1
        assert bad.with_name(bad.name + ".corrupted").exists()


async def test_damage_in_transit_does_not_quarantine_a_good_copy(
    tmp_path: Path, autojump_clock: object
) -> None:
    async with open_cluster(tmp_path, n=3) as cluster:
        data = b"flipped on the wire" * 500
        h = await cluster.nodes["n0"].put_block(data)
        await trio.sleep(1)
        reader, peers = await _without_local_copy(cluster, h)
        cluster.net.corrupt_next(peers[0], n=1)
        assert await cluster.nodes[reader].get_block(h) == data
        await trio.sleep(1)
        sender = cluster.nodes[peers[0]]
        assert sender.metrics.corruptions == 0  # the report was checked, the copy is good
        path = await sender.local_block_path(h)
        assert path is not None and not path.with_name(path.name + ".corrupted").exists()


async def test_every_peer_copy_corrupt_is_an_error_and_nothing_is_stored(
    tmp_path: Path, autojump_clock: object
) -> None:
    async with open_cluster(tmp_path, n=3) as cluster:
        data = b"rotten everywhere else" * 500
        h = await cluster.nodes["n0"].put_block(data)
        await trio.sleep(1)
        reader, peers = await _without_local_copy(cluster, h)
        for peer in peers:
            await _corrupt_copy(cluster.nodes[peer], h)
        with pytest.raises((CorruptBlockError, MissingBlockError)):
            await cluster.nodes[reader].get_block(h)
        await trio.sleep(1)
        # No bad bytes kept by read repair; both senders quarantined their copies.
        assert await cluster.nodes[reader].local_block_path(h) is None
        for peer in peers:
            assert cluster.nodes[peer].metrics.corruptions >= 1
            assert await cluster.nodes[peer].local_block_path(h) is None
