"""The resync pool follows its backlog: more workers while due work piles up, back to
the operator's count when idle; deferred checks merge into later ones."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio
import trio.testing

from trioblock import BlockManager, blake2sum
from trioblock.testing import Cluster, open_cluster

GC_CHECK = 11.0  # gc_delay=1 plus the 10 s slack of the deletion check
#: The pool's bounds (documented: 8 at most; extra workers leave after 10 s idle).
MAX_WORKERS = 8
SHRINK_IDLE = 10.0
#: Network delay to the peers (each way): deletions are batched (one query per peer for
#: up to 64 blocks), so only a slow network makes one worker fall behind here.
SLOW = 1.0


@asynccontextmanager
async def guarded_cluster(tmp_path: Path, no_livelock: Any) -> AsyncIterator[Cluster]:
    """Three nodes, gc_delay 1 s; a task spinning in virtual time fails the test."""
    with no_livelock():
        async with open_cluster(tmp_path, n=3, gc_delay=1.0) as cluster:
            yield cluster


def resync_worker_count(bm: BlockManager) -> int:
    return sum(1 for w in bm.workers() if w.name.startswith("resync"))


async def watch_workers(bm: BlockManager, seen: list[int], period: float = 0.05) -> None:
    while True:
        seen.append(resync_worker_count(bm))
        await trio.sleep(period)


async def drop_references(bm: BlockManager, n: int, tag: bytes) -> list[bytes]:
    hashes = []
    for i in range(n):
        hashes.append(await bm.put_block(tag + b" block %d" % i * 50))
        if i % 200 == 199:
            await trio.sleep(0.001)  # let virtual time move (the livelock guard watches)
    for h in hashes:
        bm.incref(h)
    for h in hashes:
        bm.decref(h)
    return hashes


async def test_a_backlog_of_due_deletions_gets_more_workers_and_drains(
    tmp_path: Path, autojump_clock: object, no_livelock: Any
) -> None:
    """Every batch of (up to 64) deletions asks the two peers first (1 s each way here);
    one worker at the default tranquility 2 needs about 6 s per batch, 30 s for 320."""
    async with guarded_cluster(tmp_path, no_livelock) as cluster:
        n0 = cluster.nodes["n0"]
        t0 = trio.current_time()
        hashes = await drop_references(n0, 320, b"backlog")
        cluster.net.set_delay("n1", SLOW)
        cluster.net.set_delay("n2", SLOW)
        seen: list[int] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch_workers, n0, seen)
            await trio.sleep_until(t0 + GC_CHECK + 25)
            nursery.cancel_scope.cancel()
        assert n0.metrics.deletes == len(hashes)
        for h in hashes[:5]:
            assert not await n0.has_local_block(h)
        assert max(seen) > 1, "the pool never grew"
        assert max(seen) <= MAX_WORKERS
        assert n0.resync_workers == 1  # the operator's setting is unchanged


async def test_never_more_than_eight_workers(
    tmp_path: Path, autojump_clock: object, no_livelock: Any
) -> None:
    async with guarded_cluster(tmp_path, no_livelock) as cluster:
        n0 = cluster.nodes["n0"]
        t0 = trio.current_time()
        hashes = await drop_references(n0, 1600, b"many")
        cluster.net.set_delay("n1", SLOW)
        cluster.net.set_delay("n2", SLOW)
        seen: list[int] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch_workers, n0, seen)
            await trio.sleep_until(t0 + GC_CHECK + 60)
            nursery.cancel_scope.cancel()
        assert max(seen) == MAX_WORKERS
        assert 0 < n0.metrics.deletes <= len(hashes)


async def test_workers_shrink_back_to_the_operators_count_when_idle(
    tmp_path: Path, autojump_clock: object, no_livelock: Any
) -> None:
    async with guarded_cluster(tmp_path, no_livelock) as cluster:
        n0 = cluster.nodes["n0"]
        n0.set_resync_workers(2)
        t0 = trio.current_time()
        hashes = await drop_references(n0, 320, b"shrink")
        cluster.net.set_delay("n1", SLOW)
        cluster.net.set_delay("n2", SLOW)
        seen: list[int] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch_workers, n0, seen)
            while n0.metrics.deletes < len(hashes):  # noqa: ASYNC110 (public API)
                await trio.sleep(0.1)
            drained = trio.current_time()
            nursery.cancel_scope.cancel()
        assert drained < t0 + GC_CHECK + 25
        assert max(seen) > 2
        # A while with nothing due: the extra workers leave, the floor stays. (Idle
        # counts from when the workers are done with their last step and its
        # tranquility pause, not from the last deletion.)
        while any(  # noqa: ASYNC110 (public API)
            w.state != "idle" for w in n0.workers() if w.name.startswith("resync")
        ):
            await trio.sleep(0.1)
        await trio.sleep(SHRINK_IDLE + 2)
        await trio.testing.wait_all_tasks_blocked()
        assert resync_worker_count(n0) == 2
        assert n0.resync_workers == 2
        # Idle for much longer: still the operator's two.
        await trio.sleep(600)
        assert resync_worker_count(n0) == 2


async def test_lowering_the_setting_stops_extra_workers_at_once(
    tmp_path: Path, autojump_clock: object, no_livelock: Any
) -> None:
    async with guarded_cluster(tmp_path, no_livelock) as cluster:
        n0 = cluster.nodes["n0"]
        n0.set_resync_workers(8)
        await trio.testing.wait_all_tasks_blocked()
        assert resync_worker_count(n0) == 8
        n0.set_resync_workers(1)
        await trio.testing.wait_all_tasks_blocked()
        assert resync_worker_count(n0) == 1


async def test_a_deferred_check_merges_into_the_deletion_check_already_queued(
    open_node, autojump_clock
) -> None:
    """A put queues a check at 2 × rpc_timeout; when the reference is dropped before it
    comes due, that check finds the copy still inside its GC delay. The decref's own
    check (gc_delay + 10 s) covers it: the queue keeps one entry, not two, and the block
    is deleted on time."""
    async with open_node(rpc_timeout=1.0, gc_delay=30.0) as bm:
        t0 = trio.current_time()
        h = await bm.put_block(b"dropped at once" * 100)
        bm.incref(h)
        bm.decref(h)
        # Checks queued: the put's (t0 + 2 s) and the decref's (t0 + 40 s); incref's
        # is the put's (same block, same msec) or one more at t0 + 2 s.
        await trio.sleep_until(t0 + 3)
        await trio.testing.wait_all_tasks_blocked()
        assert [e.hash for e in bm.list_resync_queue()] == [h]
        assert await bm.has_local_block(h)
        await trio.sleep_until(t0 + 41)
        await trio.testing.wait_all_tasks_blocked()
        assert not await bm.has_local_block(h)
        assert bm.metrics.deletes == 1
        assert bm.resync_queue_len() == 0


async def test_deferred_checks_of_many_blocks_merge_in_one_batch(open_node, autojump_clock) -> None:
    async with open_node(rpc_timeout=1.0, gc_delay=30.0) as bm:
        t0 = trio.current_time()
        hashes = [await bm.put_block(b"batch %d" % i * 100) for i in range(100)]
        for h in hashes:
            bm.incref(h)
            bm.decref(h)
        await trio.sleep_until(t0 + 3)
        await trio.testing.wait_all_tasks_blocked()
        assert bm.resync_queue_len() == len(hashes)
        await trio.sleep_until(t0 + 41)
        await trio.testing.wait_all_tasks_blocked()
        assert bm.metrics.deletes == len(hashes)
        assert bm.resync_queue_len() == 0
        assert bm.rc_len() == 0


async def test_a_deferred_check_without_a_later_one_is_kept(open_node, autojump_clock) -> None:
    """No later check of the block queued (its decref's check ran already and deferred
    too): the deferred check is rescheduled, never lost, and the block is deleted when
    its protection ends."""
    async with open_node(rpc_timeout=1.0, gc_delay=0.0) as bm:
        h = blake2sum(b"kept check")
        t0 = trio.current_time()
        await bm.put_block(b"kept check")
        bm.incref(h)
        bm.decref(h)
        await trio.sleep_until(t0 + 12)
        await trio.testing.wait_all_tasks_blocked()
        assert not await bm.has_local_block(h)
        assert bm.resync_queue_len() == 0
