"""Per-block locks are not re-entrant, and say so loudly."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from trioblock import blake2sum
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
