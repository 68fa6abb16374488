"""Resync errors, exponential back-off and operator actions on a lone node."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

import trioblock
from trioblock import MissingBlockError, ResyncErrorInfo, blake2sum

MINUTE = 60_000


async def settle_at(t: float) -> None:
    await trio.sleep_until(t)
    await trio.testing.wait_all_tasks_blocked()


async def test_absent_referenced_block_backs_off_60s_doubling_to_64min(
    open_node, autojump_clock
) -> None:
    h = blake2sum(b"referenced, never stored")
    async with open_node() as bm:
        t0 = trio.current_time()
        n0 = bm.now_msec()
        bm.incref(h)
        # The first check comes 2 × rpc_timeout after the incref.
        await settle_at(t0 + 60 - 0.001)
        assert bm.list_resync_errors() == []
        expected_try = n0 + 60_000
        for n, minutes in enumerate([1, 2, 4, 8, 16, 32, 64, 64, 64], start=1):
            await settle_at(t0 + (expected_try - n0) / 1000)
            (err,) = bm.list_resync_errors()
            assert isinstance(err, ResyncErrorInfo)
            assert err.hash == h
            assert err.refcount == 1
            assert err.error_count == n
            assert err.last_try == expected_try
            assert err.next_try == expected_try + minutes * MINUTE
            assert bm.resync_errors_len() == 1
            assert bm.resync_queue_len() == 1
            assert bm.metrics.resync_errors == n
            # Nothing more happens before the next try.
            await settle_at(t0 + (err.next_try - n0) / 1000 - 0.001)
            assert bm.list_resync_errors()[0].error_count == n
            expected_try = err.next_try


async def test_retry_delay_is_configurable(open_node, autojump_clock) -> None:
    h = blake2sum(b"fast retries")
    async with open_node(resync_retry_delay=1.0, rpc_timeout=1.0) as bm:
        t0, n0 = trio.current_time(), bm.now_msec()
        bm.incref(h)
        await settle_at(t0 + 2 + 1 + 2 + 4)
        (err,) = bm.list_resync_errors()
        assert err.error_count == 4
        assert err.last_try == n0 + 9_000
        assert err.next_try == n0 + 17_000


async def test_virtual_time_is_deterministic_with_default_tranquility(
    open_node, autojump_clock
) -> None:
    """Under a MockClock, resync timing must not depend on how fast the real CPU is.

    Three referenced, absent blocks fall due at the same msec; each attempt fails at once.
    With the default tranquility, every failure must still be stamped at that msec (the
    throttle is ``tranquility × step time``, and steps take no virtual time).
    """
    hashes = [blake2sum(b"due together %d" % i) for i in range(3)]
    async with open_node() as bm:
        t0, n0 = trio.current_time(), bm.now_msec()
        for h in hashes:
            bm.incref(h)
        await settle_at(t0 + 60)
        errors = bm.list_resync_errors()
        assert sorted(e.hash for e in errors) == sorted(hashes)
        assert {e.last_try for e in errors} == {n0 + 60_000}


async def test_retry_now_clears_backoff_and_requeues_now(open_node, autojump_clock) -> None:
    h = blake2sum(b"retry me")
    async with open_node(resync_tranquility=0) as bm:
        t0 = trio.current_time()
        bm.incref(h)
        await settle_at(t0 + 60 + 60 + 120)
        assert bm.list_resync_errors()[0].error_count == 3
        now = bm.now_msec()
        assert bm.retry_now(h)
        # The back-off is cleared but the history stays (as Garage's clear_backoff).
        (err,) = bm.list_resync_errors()
        assert err.error_count == 3 and err.next_try <= now
        assert trioblock.QueuedResync(h, now) in bm.list_resync_queue(10)
        # The retry happens at once and fails again: the count goes on, and so does the
        # growth of the back-off (2^3 minutes after the 4th failure in a row).
        await trio.testing.wait_all_tasks_blocked()
        (err,) = bm.list_resync_errors()
        assert (err.error_count, err.last_try, err.next_try) == (4, now, now + 8 * MINUTE)
        # retry_now on a block without errors says so (awaitable or not).
        assert bm.retry_now(blake2sum(b"no error")) is False


async def test_putting_the_block_ends_the_errors(open_node, autojump_clock) -> None:
    data = b"arrives late"
    h = blake2sum(data)
    async with open_node() as bm:
        t0 = trio.current_time()
        bm.incref(h)
        await settle_at(t0 + 60 + 60)
        assert bm.resync_errors_len() == 1
        await bm.put_block(data)
        (err,) = bm.list_resync_errors()
        await settle_at(t0 + (err.next_try - err.last_try) / 1000 + 120)
        assert bm.resync_errors_len() == 0
        assert bm.resync_queue_len() == 0
        assert await bm.get_block(h) == data


async def test_purge_drops_rc_errors_queue_and_local_copy(
    open_node, autojump_clock, data_dir: Path, disk
) -> None:
    data = b"unrecoverable"
    async with open_node(resync_tranquility=0) as bm:
        t0 = trio.current_time()
        h = await bm.put_block(data)
        await bm.put_block(data, compress=False)  # a plain copy too (kept beside the .zst)
        disk.block_file(data_dir, h, compressed=False).write_bytes(data)
        bm.incref(h)
        bm.incref(blake2sum(b"other"))
        missing = blake2sum(b"missing")
        bm.incref(missing)
        other = blake2sum(b"other")
        await settle_at(t0 + 60)
        assert {e.hash for e in bm.list_resync_errors()} == {other, missing}
        assert bm.purge(h) == 2  # the .zst and the plain copy
        bm.purge(missing)
        assert bm.get_block_rc(h) == 0
        assert bm.get_block_rc(missing) == 0
        assert bm.rc_len() == 1
        assert [e.hash for e in bm.list_resync_errors()] == [other]
        assert [q.hash for q in bm.list_resync_queue(10)] == [other]
        assert not await bm.has_local_block(h)
        with pytest.raises(MissingBlockError):
            await bm.get_block(h)
        await trio.testing.wait_all_tasks_blocked()
        assert disk.files_under(data_dir) == []
        assert bm.get_block_rc(other) == 1


@pytest.mark.parametrize(("opened_at", "offset"), [(0.0, 0.0), (1000.0, 0.002), (100.1, 0.004)])
async def test_resync_runs_when_due_whatever_the_time_the_node_opened(
    open_node, autojump_clock, opened_at: float, offset: float
) -> None:
    """Queue times are whole msec; waking at their Trio time must find them due.

    (A wake-up computed as ``trio0 + (when - wall0) / 1000`` can round to a Trio time at
    which ``now_msec()`` is still ``when - 1``: the worker then spins without blocking,
    and under a MockClock virtual time never advances again.)
    """
    h = blake2sum(b"due on time")
    await trio.sleep(opened_at)
    async with open_node() as bm:
        await trio.sleep(offset)
        t0 = trio.current_time()
        incref_at = bm.now_msec()
        bm.incref(h)
        await settle_at(t0 + 61)
        (err,) = bm.list_resync_errors()
        assert err.last_try == incref_at + 60_000
