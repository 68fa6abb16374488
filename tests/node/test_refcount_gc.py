"""Reference counts and garbage collection under virtual time (DESIGN §2, §4)."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

import trioblock
from trioblock import MissingBlockError, blake2sum

GC = 600.0
SLACK = 10.0
DATA = b"garbage collection candidate " * 32


async def settle_at(t: float) -> None:
    """Advance virtual time to exactly ``t`` and let every due background step run."""
    await trio.sleep_until(t)
    await trio.testing.wait_all_tasks_blocked()
    assert trio.current_time() == t


async def test_incref_decref_counts(open_node, autojump_clock) -> None:
    h = blake2sum(b"counted")
    async with open_node() as bm:
        assert bm.get_block_rc(h) == 0
        assert [bm.incref(h) for _ in range(3)] == [1, 2, 3]
        assert bm.get_block_rc(h) == 3
        assert bm.rc_len() == 1
        assert [bm.decref(h) for _ in range(4)] == [2, 1, 0, 0]
        assert bm.get_block_rc(h) == 0
        assert bm.rc_len() == 1  # Deletable row while the GC delay runs


async def test_incref_queues_a_check_in_twice_rpc_timeout(open_node, autojump_clock) -> None:
    h = blake2sum(b"queued")
    async with open_node(rpc_timeout=7.0) as bm:
        now = bm.now_msec()
        bm.incref(h)
        bm.incref(h)  # already referenced: no second entry
        assert bm.list_resync_queue(10) == [trioblock.QueuedResync(h, now + 14_000)]
        assert bm.resync_queue_len() == 1


async def test_decref_to_zero_queues_deletion_check_at_gc_delay_plus_10s(
    open_node, autojump_clock
) -> None:
    async with open_node(gc_delay=GC) as bm:
        h = await bm.put_block(DATA)
        bm.incref(h)
        await trio.testing.wait_all_tasks_blocked()
        now = bm.now_msec()
        bm.decref(h)
        entries = bm.list_resync_queue(10)
        assert trioblock.QueuedResync(h, now + 610_000) in entries
        assert bm.get_rc_entry(h).deletable_at == now + 600_000


async def test_decref_to_zero_deletes_after_gc_delay(
    open_node, autojump_clock, data_dir: Path, disk
) -> None:
    async with open_node(gc_delay=GC) as bm:
        t0 = trio.current_time()
        h = await bm.put_block(DATA)
        bm.incref(h)
        bm.decref(h)
        await settle_at(t0 + GC + SLACK - 0.001)
        assert await bm.has_local_block(h)
        assert await bm.get_block(h) == DATA
        assert bm.metrics.deletes == 0
        await settle_at(t0 + GC + SLACK)
        assert not await bm.has_local_block(h)
        assert bm.metrics.deletes == 1
        assert bm.rc_len() == 0
        assert bm.resync_queue_len() == 0
        with pytest.raises(MissingBlockError):
            await bm.get_block(h)
    assert disk.files_under(data_dir) == []


async def test_gc_delay_zero_deletes_at_the_10s_check(open_node, autojump_clock) -> None:
    async with open_node(gc_delay=0) as bm:
        t0 = trio.current_time()
        h = await bm.put_block(DATA)
        bm.incref(h)
        bm.decref(h)
        await settle_at(t0 + SLACK - 0.001)
        assert await bm.has_local_block(h)
        await settle_at(t0 + SLACK)
        assert not await bm.has_local_block(h)


async def test_incref_before_the_deadline_saves_the_block(open_node, autojump_clock) -> None:
    async with open_node(gc_delay=GC) as bm:
        t0 = trio.current_time()
        h = await bm.put_block(DATA)
        bm.incref(h)
        bm.decref(h)
        await settle_at(t0 + GC / 2)
        assert bm.incref(h) == 1
        await settle_at(t0 + 5 * GC)
        assert await bm.get_block(h) == DATA
        assert bm.get_block_rc(h) == 1
        assert bm.metrics.deletes == 0


async def test_incref_after_gc_delay_but_before_the_check_saves_the_block(
    open_node, autojump_clock
) -> None:
    async with open_node(gc_delay=GC) as bm:
        t0 = trio.current_time()
        h = await bm.put_block(DATA)
        bm.incref(h)
        bm.decref(h)
        await settle_at(t0 + GC + 5)
        bm.incref(h)
        await settle_at(t0 + 3 * GC)
        assert await bm.get_block(h) == DATA
        assert bm.metrics.deletes == 0


async def test_block_put_again_before_the_check_is_protected_for_gc_delay(
    open_node, autojump_clock
) -> None:
    async with open_node(gc_delay=GC) as bm:
        t0 = trio.current_time()
        h = await bm.put_block(DATA)
        bm.incref(h)
        bm.decref(h)
        await settle_at(t0 + GC + 5)
        await bm.put_block(DATA)  # the application is about to reference it again
        written = t0 + GC + 5
        await settle_at(t0 + GC + SLACK)
        assert await bm.has_local_block(h)
        # Deleted only once the copy is more than gc_delay old (1 ms granularity).
        await settle_at(written + GC)
        assert await bm.has_local_block(h)
        await settle_at(written + GC + 0.001)
        assert not await bm.has_local_block(h)
        assert bm.metrics.deletes == 1


async def test_unreferenced_block_never_increfed_is_kept(open_node, autojump_clock) -> None:
    async with open_node(gc_delay=GC) as bm:
        h = await bm.put_block(DATA)
        await settle_at(trio.current_time() + 10 * GC)
        assert await bm.get_block(h) == DATA
        assert bm.get_block_rc(h) == 0


async def test_several_references_survive_partial_decref(open_node, autojump_clock) -> None:
    async with open_node(gc_delay=GC) as bm:
        h = await bm.put_block(DATA)
        bm.incref(h)
        bm.incref(h)
        bm.decref(h)
        await settle_at(trio.current_time() + 10 * GC)
        assert await bm.get_block(h) == DATA
        assert bm.get_block_rc(h) == 1


async def test_deletable_row_without_a_copy_is_cleared(open_node, autojump_clock) -> None:
    h = blake2sum(b"referenced but never stored")
    async with open_node(gc_delay=GC) as bm:
        t0 = trio.current_time()
        bm.incref(h)
        bm.decref(h)
        await settle_at(t0 + GC + SLACK)
        assert bm.rc_len() == 0
        assert bm.resync_queue_len() == 0


async def test_gc_delay_counts_virtual_time_across_a_restart(open_node, autojump_clock) -> None:
    """The node clock must not lose the virtual time that passed before a restart."""
    async with open_node(gc_delay=GC) as bm:
        t0 = trio.current_time()
        h = await bm.put_block(DATA)
        bm.incref(h)
        bm.decref(h)
        await settle_at(t0 + GC / 2)
        before_restart = bm.now_msec()
    async with open_node(gc_delay=GC) as bm:
        assert bm.now_msec() >= before_restart
        await settle_at(t0 + GC + SLACK + 1)
        assert not await bm.has_local_block(h)


async def test_many_noop_checks_are_settled_beside_a_real_deletion(
    open_node, autojump_clock
) -> None:
    async with open_node(rpc_timeout=5.0) as bm:
        kept = []
        for i in range(150):
            h = await bm.put_block(b"kept %d " % i * 50)
            bm.incref(h)
            kept.append(h)
        gone = await bm.put_block(DATA)
        bm.incref(gone)
        bm.decref(gone)
        assert bm.resync_queue_len() == 152  # a check per put, and the deletion
        await trio.sleep(GC + SLACK + 5)
        await trio.testing.wait_all_tasks_blocked()
        assert bm.resync_queue_len() == 0
        assert not await bm.has_local_block(gone)
        for h in kept:
            assert await bm.has_local_block(h)
        assert bm.resync_errors_len() == 0
