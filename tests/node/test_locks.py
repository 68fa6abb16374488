"""Per-block locks are not re-entrant, and say so loudly."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import trio
import trio.testing

from trioblock import Config, DataDir, blake2sum, open_block_manager
from trioblock._core.block import encode_block
from trioblock._core.datalayout import DataLayout
from trioblock._storage.blockfiles import BlockStore, WriteOutcome
from trioblock._storage.locks import KeyedLock


async def test_taking_a_held_block_lock_again_names_the_block() -> None:
    locks = KeyedLock()
    h = blake2sum(b"locked twice")
    async with locks.hold(h):
        with pytest.raises(RuntimeError, match=f"lock of block {h.hex()} is already held"):
            async with locks.hold(h):
                pass  # pragma: no cover
        assert locks.locked(h)
    assert not locks.locked(h)
    assert len(locks) == 0


async def test_another_task_waits_for_the_lock() -> None:
    locks = KeyedLock()
    h = blake2sum(b"shared")
    order: list[str] = []

    async def other() -> None:
        async with locks.hold(h):
            order.append("other")

    async with trio.open_nursery() as nursery, locks.hold(h):
        nursery.start_soon(other)
        await trio.testing.wait_all_tasks_blocked()
        order.append("first")
    assert order == ["first", "other"]
    assert len(locks) == 0


# -- claims by worker threads -----------------------------------------------------------


async def test_a_claim_is_refused_while_a_task_holds_or_waits_for_the_block() -> None:
    locks = KeyedLock()
    h = blake2sum(b"busy")
    async with locks.hold(h):
        assert not locks.try_claim(h)
    assert len(locks) == 0
    assert locks.try_claim(h)
    assert locks.locked(h)
    assert not locks.try_claim(h)  # a second claim of a claimed block
    locks.release_claim(h, trio.lowlevel.current_trio_token())
    assert not locks.locked(h)
    assert len(locks) == 0


async def test_a_task_waits_until_a_worker_thread_releases_its_claim() -> None:
    locks = KeyedLock()
    h = blake2sum(b"claimed")
    token = trio.lowlevel.current_trio_token()
    order: list[str] = []
    claimed = threading.Event()
    release = threading.Event()

    def worker() -> None:
        assert locks.try_claim(h)
        claimed.set()
        release.wait(10)
        order.append("thread")
        locks.release_claim(h, token)

    async def task() -> None:
        async with locks.hold(h):
            order.append("task")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.to_thread.run_sync, worker)
        await trio.to_thread.run_sync(claimed.wait, 10)
        nursery.start_soon(task)
        await trio.testing.wait_all_tasks_blocked()
        assert order == []  # the task waits for the thread
        assert locks.locked(h)
        release.set()
    assert order == ["thread", "task"]
    assert len(locks) == 0


async def test_a_thread_write_is_refused_while_a_task_holds_the_block(tmp_path: Path) -> None:
    """``try_write_sync`` never writes under a lock a task holds (a deletion, say); once
    the lock is free it writes, and a task then waiting for the lock sees the copy."""
    (tmp_path / "d").mkdir()
    store = BlockStore(
        DataLayout.initial([DataDir(tmp_path / "d")]),
        compression=True,
        fsync=False,
        limiter=trio.CapacityLimiter(2),
        max_block_size=1 << 20,
    )
    data = b"contended block" * 100
    h = blake2sum(data)
    block = encode_block(data, 1)
    token = trio.lowlevel.current_trio_token()
    async with store.locks.hold(h):
        refused = await trio.to_thread.run_sync(store.try_write_sync, h, block, 1, token)
        assert refused is None
        assert await store.find(h) is None
    written = await trio.to_thread.run_sync(store.try_write_sync, h, block, 1, token)
    assert written is WriteOutcome.WRITTEN
    async with store.locks.hold(h):
        assert await store.find(h) is not None
    assert len(store.locks) == 0


async def test_many_puts_of_the_same_blocks_at_once_store_each_once(tmp_path: Path) -> None:
    """Puts racing for the same blocks (claims and task locks mixed): every put
    succeeds, each block is stored once and counted once."""
    config = Config(node_id="n", metadata_dir=tmp_path / "m", data_dir=tmp_path / "d")
    blocks = [f"block {i} ".encode() * 500 for i in range(8)]
    async with open_block_manager(config) as bm:

        async def putter(seed: int) -> None:
            for i in range(len(blocks)):
                data = blocks[(i + seed) % len(blocks)]
                assert await bm.put_block(data) == blake2sum(data)

        async with trio.open_nursery() as nursery:
            for seed in range(12):
                nursery.start_soon(putter, seed)
        for data in blocks:
            assert await bm.get_block(blake2sum(data)) == data
        with trio.fail_after(10):
            while not bm.stored().exact:  # noqa: ASYNC110
                await trio.sleep(0.01)
        assert bm.stored().blocks == len(blocks)
