"""GC deletions that must first ask, or send to, the other storage nodes (offload)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from trioblock import TransportError
from trioblock._net.rpc import RpcNode
from trioblock.testing import open_cluster

GC_CHECK = 11.0  # gc_delay=1 plus the 10 s slack of the deletion check


async def test_a_refused_deletion_is_logged_once_with_its_cause(
    tmp_path: Path, autojump_clock: object, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="trioblock")
    async with open_cluster(tmp_path, n=3, gc_delay=1.0, resync_retry_delay=5.0) as cluster:
        n0 = cluster.nodes["n0"]
        h = await n0.put_block(b"unreferenced soon" * 100)
        n0.incref(h)
        n0.decref(h)
        cluster.net.partition(["n0"], ["n1"])
        await trio.sleep(GC_CHECK + 60)  # the first try and a few retries
        assert await n0.has_local_block(h)  # n1 could not be asked: kept
        assert n0.resync_errors_len() == 1
        warnings = [
            r.getMessage()
            for r in caplog.records
            if r.levelno >= logging.WARNING and h.hex() in r.getMessage()
        ]
        assert len(warnings) == 1, warnings
        assert "not deleting" in warnings[0] and "n1" in warnings[0]
        assert "TransportError" in warnings[0]
        assert not any("Trio nursery" in r.getMessage() for r in caplog.records)
        cluster.net.heal()
        n0.retry_now(h)
        await trio.sleep(5)
        assert not await n0.has_local_block(h)
        assert n0.resync_errors_len() == 0


@pytest.mark.parametrize("how", ["stop", "kill"])
async def test_stopping_a_node_while_it_asks_peers_before_deleting_is_clean(
    tmp_path: Path,
    autojump_clock: object,
    monkeypatch: pytest.MonkeyPatch,
    how: str,
) -> None:
    """A peer's query that fails *because* the node is going down (its connection breaks
    under the cancellation) must not turn the node's shutdown into a failure."""
    real_need_blocks = RpcNode.need_blocks
    asking = trio.Event()

    async def need_blocks(self: RpcNode, peer: str, *args: Any, **kwargs: Any) -> list[bool]:
        if peer != "n1":
            return await real_need_blocks(self, peer, *args, **kwargs)
        asking.set()
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            raise TransportError("connection to n1 broke") from None
        raise AssertionError("unreachable")

    monkeypatch.setattr(RpcNode, "need_blocks", need_blocks)
    async with open_cluster(tmp_path, n=3, gc_delay=1.0) as cluster:
        n0 = cluster.nodes["n0"]
        h = await n0.put_block(b"unreferenced soon" * 100)
        n0.incref(h)
        n0.decref(h)
        cluster.net.set_delay("n2", 30.0)
        with trio.fail_after(GC_CHECK + 5):
            await asking.wait()
        await getattr(cluster, how)("n0")
        assert "n0" not in cluster.nodes
        # The rest of the cluster carries on, and n0 starts again.
        await cluster.start("n0")
        assert await cluster.nodes["n1"].get_block(h) == b"unreferenced soon" * 100


async def test_a_corrupt_unreferenced_copy_is_quarantined_when_offloading(
    tmp_path: Path, autojump_clock: object
) -> None:
    async with open_cluster(tmp_path, n=3, gc_delay=1.0) as cluster:
        n0 = cluster.nodes["n0"]
        data = b"corrupt before gc" * 100
        h = await n0.put_block(data)
        await trio.testing.wait_all_tasks_blocked()
        n0.incref(h)
        n0.decref(h)
        # n1 lost its copy but still references the block: it needs n0's copy.
        n1 = await cluster.wipe("n1")
        n1.incref(h)
        path = await n0.local_block_path(h)
        assert path is not None
        raw = bytearray(path.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        path.write_bytes(bytes(raw))
        await trio.sleep(GC_CHECK + 2)
        assert path.with_name(path.name + ".corrupted").exists()
        assert not await n0.has_local_block(h)
        assert n0.metrics.corruptions == 1
        assert n0.resync_errors_len() == 0
        assert n0.rc_len() == 0
        # n1 still gets the block, from n2.
        await trio.sleep(60)
        assert await n1.has_local_block(h)
