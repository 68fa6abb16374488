"""GC deletions in batches: each other storage node is asked once per batch, the few
blocks it needs are offloaded first, and every block keeps the per-block guarantees."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from trioblock import BlockManager
from trioblock._net import server as server_module
from trioblock._net.messages import NeedBlocksQuery
from trioblock._net.rpc import RpcNode
from trioblock.testing import Cluster, open_cluster

GC_CHECK = 11.0  # gc_delay=1 plus the 10 s slack of the deletion check
N = 12


async def unreferenced_blocks(bm: BlockManager, n: int, tag: bytes) -> list[bytes]:
    """``n`` blocks put on ``bm`` (replicated), counted once and dropped again there."""
    hashes = [await bm.put_block((tag + b" %d" % i) * 40) for i in range(n)]
    await trio.testing.wait_all_tasks_blocked()
    for h in hashes:
        bm.incref(h)
    for h in hashes:
        bm.decref(h)
    return hashes


def count_queries(monkeypatch: pytest.MonkeyPatch) -> Counter[tuple[str, str, str]]:
    """Count (asking node, peer, "batch" | "single") queries."""
    calls: Counter[tuple[str, str, str]] = Counter()
    real_batch, real_single = RpcNode.need_blocks, RpcNode.need_block

    async def need_blocks(self: RpcNode, peer: str, *args: Any, **kwargs: Any) -> list[bool]:
        calls[self.node_id, peer, "batch"] += 1
        return await real_batch(self, peer, *args, **kwargs)

    async def need_block(self: RpcNode, peer: str, *args: Any, **kwargs: Any) -> bool:
        calls[self.node_id, peer, "single"] += 1
        return await real_single(self, peer, *args, **kwargs)

    monkeypatch.setattr(RpcNode, "need_blocks", need_blocks)
    monkeypatch.setattr(RpcNode, "need_block", need_block)
    return calls


async def assert_all_gone(bm: BlockManager, hashes: list[bytes]) -> None:
    for h in hashes:
        assert not await bm.has_local_block(h), h.hex()
    assert bm.rc_len() == 0
    assert bm.resync_errors_len() == 0


async def test_a_batch_asks_each_peer_once_and_offloads_the_one_block_needed(
    tmp_path: Path,
    autojump_clock: object,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="trioblock.resync")
    calls = count_queries(monkeypatch)
    async with open_cluster(tmp_path, n=3, gc_delay=1.0) as cluster:
        n0 = cluster.nodes["n0"]
        hashes = await unreferenced_blocks(n0, N, b"batch")
        # n1 lost its copies but references one block: it needs n0's copy of it.
        n1 = await cluster.wipe("n1")
        n1.incref(hashes[5])
        await trio.sleep(GC_CHECK + 1)
        await assert_all_gone(n0, hashes)
        assert n0.metrics.deletes == N
        assert n0.metrics.resync_sent == 1
        assert await n1.has_local_block(hashes[5])
        assert await n1.get_block(hashes[5]) == b"batch 5" * 40
        # One batch query per peer, no per-block query.
        assert calls["n0", "n1", "batch"] == 1
        assert calls["n0", "n2", "batch"] == 1
        assert calls["n0", "n1", "single"] == calls["n0", "n2", "single"] == 0
        # One info line for the batch, none per block.
        infos = [
            r.getMessage()
            for r in caplog.records
            if r.levelno == logging.INFO and r.getMessage().startswith("n0:")
        ]
        batch_lines = [m for m in infos if "resync batch of" in m]
        assert len(batch_lines) == 1, infos
        assert f"{N} deleted (1 offloaded first)" in batch_lines[0]
        assert not any("deleted unreferenced block" in m for m in infos)


async def test_an_unreachable_peer_defers_the_whole_batch_and_keeps_every_row(
    tmp_path: Path, autojump_clock: object, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="trioblock")
    async with open_cluster(tmp_path, n=3, gc_delay=1.0, resync_retry_delay=5.0) as cluster:
        n0 = cluster.nodes["n0"]
        hashes = await unreferenced_blocks(n0, N, b"unreachable")
        cluster.net.partition(["n0"], ["n1"])
        await trio.sleep(GC_CHECK + 30)  # the first try and a few retries
        for h in hashes:
            assert await n0.has_local_block(h)
            assert n0.get_rc_entry(h).deletable_at is not None  # the row is kept
        assert n0.rc_len() == N
        assert n0.resync_errors_len() == N
        assert n0.metrics.deletes == 0
        warnings = [
            r.getMessage()
            for r in caplog.records
            if r.levelno >= logging.WARNING and r.getMessage().startswith("n0:")
        ]
        # The batch's deferrals in one line (not one per block), naming the peer; the
        # retries log nothing more.
        assert len(warnings) == 1, warnings
        assert f"{N} unreferenced blocks kept for now" in warnings[0]
        assert "n1" in warnings[0] and "not deleting" in warnings[0]
        cluster.net.heal()
        n0.retry_all_now()
        await trio.sleep(5)
        await assert_all_gone(n0, hashes)


async def test_blocks_referenced_again_during_the_query_are_kept_the_rest_deleted(
    tmp_path: Path, autojump_clock: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between the batch's query and its deletions one block is counted again and
    another gets a live reference the count lacks: both are kept (the second one's
    count repaired by the recount), the others deleted."""
    real = RpcNode.need_blocks
    node: dict[str, BlockManager] = {}
    hashes: list[bytes] = []

    async def need_blocks(self: RpcNode, peer: str, *args: Any, **kwargs: Any) -> list[bool]:
        answers = await real(self, peer, *args, **kwargs)
        if self.node_id == "n0" and peer == "n2" and hashes:
            n0 = node["n0"]
            if n0.get_block_rc(hashes[2]) == 0:
                n0.incref(hashes[2])
                await n0.add_reference(hashes[7], "app")
                n0.decref(hashes[7])  # mixing the APIs: count 0, reference alive
        return answers

    monkeypatch.setattr(RpcNode, "need_blocks", need_blocks)
    async with open_cluster(tmp_path, n=3, gc_delay=1.0) as cluster:
        n0 = node["n0"] = cluster.nodes["n0"]
        hashes.extend(await unreferenced_blocks(n0, N, b"again"))
        await trio.sleep(GC_CHECK + 1)
        assert await n0.has_local_block(hashes[2])
        assert n0.get_block_rc(hashes[2]) == 1
        assert await n0.has_local_block(hashes[7])
        assert n0.get_block_rc(hashes[7]) == 1  # repaired from the live reference
        others = [h for i, h in enumerate(hashes) if i not in (2, 7)]
        for h in others:
            assert not await n0.has_local_block(h)
        assert n0.metrics.deletes == N - 2
        assert n0.rc_len() == 2
        assert n0.resync_errors_len() == 0


async def test_peers_without_the_batch_message_are_asked_block_by_block(
    tmp_path: Path,
    autojump_clock: object,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delitem(server_module.SIMPLE_ROUTES, NeedBlocksQuery)  # older servers
    calls = count_queries(monkeypatch)
    async with open_cluster(tmp_path, n=3, gc_delay=1.0) as cluster:
        n0 = cluster.nodes["n0"]
        hashes = await unreferenced_blocks(n0, N, b"old peers")
        n1 = await cluster.wipe("n1")
        n1.incref(hashes[3])
        await trio.sleep(GC_CHECK + 1)
        await assert_all_gone(n0, hashes)
        assert await n1.has_local_block(hashes[3])  # still offloaded first
        assert calls["n0", "n1", "single"] == N
        assert calls["n0", "n2", "single"] == N


def block_and_row(bm: BlockManager, present: bool, h: bytes) -> tuple[bool, bool]:
    return present, bm.get_rc_entry(h).encode() is not None


@pytest.mark.parametrize("when", ["query", "unlink"])
async def test_a_batch_cancelled_midway_leaves_each_block_deleted_or_kept_whole(
    tmp_path: Path, autojump_clock: object, monkeypatch: pytest.MonkeyPatch, when: str
) -> None:
    """Killing the node in the middle of a batch: every block is either deleted with its
    count row dropped, or kept with its row and a queued check; never a row left without
    a check to clear it, never a copy gone while counted."""
    from trioblock._storage.blockfiles import BlockStore

    reached = trio.Event()
    if when == "query":
        real = RpcNode.need_blocks

        async def need_blocks(self: RpcNode, peer: str, *args: Any, **kwargs: Any) -> list[bool]:
            if self.node_id == "n0":
                reached.set()
                await trio.sleep(1)
            return await real(self, peer, *args, **kwargs)

        monkeypatch.setattr(RpcNode, "need_blocks", need_blocks)
    else:
        real_discard = BlockStore.discard_sync
        owner: list[BlockStore] = []

        def discard_sync(self: BlockStore, trash: Path) -> None:
            if owner and self is owner[0]:
                reached.set()
            real_discard(self, trash)

        monkeypatch.setattr(BlockStore, "discard_sync", discard_sync)

    async with open_cluster(tmp_path, n=3, gc_delay=1.0) as cluster:
        n0 = cluster.nodes["n0"]
        if when == "unlink":
            owner.append(_store_of(n0))
        hashes = await unreferenced_blocks(n0, N, b"cancel")
        with trio.fail_after(GC_CHECK + 5):
            await reached.wait()
        await cluster.kill("n0")
        n0 = await cluster.start("n0")
        states = {h: (await n0.has_local_block(h), n0.get_rc_entry(h)) for h in hashes}
        queued = {bytes(q.hash) for q in n0.list_resync_queue()}
        for h, (present, rc) in states.items():
            assert rc.count == 0
            if present:
                assert rc.encode() is not None and bytes(h) in queued, h.hex()
            else:
                assert rc.encode() is None, f"{h.hex()}: copy gone, row left"
        if when == "query":
            assert all(present for present, _rc in states.values())
        else:
            assert not any(present for present, _rc in states.values())
        # The node finishes the work after its restart.
        await trio.sleep(GC_CHECK + 30)
        await assert_all_gone(n0, hashes)


def _store_of(bm: BlockManager) -> Any:
    return bm._ctx.store  # type: ignore[attr-defined]


async def _unused(cluster: Cluster) -> None:  # pragma: no cover
    pass
