"""Concurrent block writes sharing worker-thread trips (``GroupWriter``).

Real threads and the real clock: under a MockClock the work runs inline. Seeded random
schedules of arrivals and cancellations check that every write gets its own outcome,
that none is run twice or lost, and that a caller never leaves while its item is being
written (it holds the block's lock meanwhile).
"""

from __future__ import annotations

import random
import threading

import outcome
import pytest
import trio

from trioblock._storage.groupwrite import GroupWriter


class Groups:
    """A group function recording its groups; a group with item 0 waits for the test's
    gate (item 9: for ``open9``), a negative item fails (its own outcome only)."""

    def __init__(self) -> None:
        self.groups: list[list[int]] = []
        self.entered = threading.Event()
        self.open = threading.Event()
        self.entered9 = threading.Event()
        self.open9 = threading.Event()
        self.running: set[int] = set()
        self.lock = threading.Lock()

    def __call__(self, items: list[int]) -> list[outcome.Outcome[int]]:
        with self.lock:
            self.groups.append(list(items))
            self.running.update(items)
        try:
            if 9 in items:
                self.entered9.set()
                self.open9.wait(10)
            if 0 in items:
                self.entered.set()
                self.open.wait(10)
            return [
                outcome.Error(ValueError(f"item {i}")) if i < 0 else outcome.Value(i * 10)
                for i in items
            ]
        finally:
            with self.lock:
                self.running.difference_update(items)


async def test_writes_waiting_together_share_a_trip_with_their_own_outcomes() -> None:
    groups = Groups()
    writer: GroupWriter[int, int] = GroupWriter(limiter=trio.CapacityLimiter(4), max_trips=1)
    results: dict[int, object] = {}

    async def one(i: int) -> None:
        try:
            results[i] = await writer.call(groups, i)
        except ValueError as exc:
            results[i] = str(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(one, 0)
        await trio.to_thread.run_sync(groups.entered.wait)
        for i in (1, 2, -3, 4):
            nursery.start_soon(one, i)
        await trio.sleep(0.05)
        groups.open.set()
    assert [sorted(g) for g in groups.groups] == [[0], [-3, 1, 2, 4]]
    assert results == {0: 0, 1: 10, 2: 20, -3: "item -3", 4: 40}
    assert writer.trips_run == 2 and writer.items_run == 5


async def test_a_cancelled_caller_whose_item_is_being_written_waits_for_its_trip() -> None:
    groups = Groups()
    writer: GroupWriter[int, int] = GroupWriter(limiter=trio.CapacityLimiter(4), max_trips=1)
    left_while_running: list[bool] = []

    async def cancelled(i: int, scope: trio.CancelScope) -> None:
        with scope:
            await writer.call(groups, i)
        left_while_running.append(i in groups.running)

    async with trio.open_nursery() as nursery:
        first = trio.CancelScope()
        nursery.start_soon(cancelled, 0, first)
        await trio.to_thread.run_sync(groups.entered.wait)
        first.cancel()  # its item is in the trip under way
        await trio.sleep(0.05)
        assert left_while_running == []  # still waiting for its trip
        groups.open.set()
    assert left_while_running == [False]
    assert writer.trips_run == 1


async def test_a_cancelled_caller_whose_item_another_leader_writes_waits_for_that_trip() -> None:
    groups = Groups()
    writer: GroupWriter[int, int] = GroupWriter(limiter=trio.CapacityLimiter(4), max_trips=1)
    left_while_running: list[bool] = []

    async def cancelled(i: int, scope: trio.CancelScope) -> None:
        with scope:
            await writer.call(groups, i)
        left_while_running.append(i in groups.running)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.call, groups, 9)  # leads a trip that waits for open9
        await trio.to_thread.run_sync(groups.entered9.wait)
        nursery.start_soon(writer.call, groups, 0)  # queued: leads the next trip
        await trio.sleep(0.01)
        scope = trio.CancelScope()
        nursery.start_soon(cancelled, 1, scope)  # queued: taken by 0's trip
        await trio.sleep(0.02)
        groups.open9.set()
        await trio.to_thread.run_sync(groups.entered.wait)  # 0's trip, with 1, runs
        scope.cancel()
        await trio.sleep(0.05)
        assert left_while_running == []  # still waiting for the trip writing its item
        groups.open.set()
    assert left_while_running == [False]
    assert [sorted(g) for g in groups.groups] == [[9], [0, 1]]


@pytest.mark.parametrize("seed", range(8))
async def test_random_arrivals_and_cancellations_lose_and_repeat_nothing(seed: int) -> None:
    rng = random.Random(seed)
    groups = Groups()
    groups.open.set()
    groups.open9.set()
    writer: GroupWriter[int, int] = GroupWriter(
        limiter=trio.CapacityLimiter(3), max_trips=rng.randint(1, 3), max_group=rng.randint(1, 6)
    )
    answered: dict[int, int] = {}
    cancelled: set[int] = set()

    async def one(i: int, delay: float, cancel_after: float | None) -> None:
        await trio.sleep(delay)
        with trio.CancelScope() as scope:
            if cancel_after is not None:
                scope.deadline = trio.current_time() + cancel_after
            answered[i] = await writer.call(groups, i)
        if scope.cancelled_caught:
            cancelled.add(i)
            assert i not in groups.running  # never leaves while its item is written

    async with trio.open_nursery() as nursery:
        for i in range(1, 60):
            cancel_after = rng.choice([None, None, 0.0, 0.001, 0.003])
            nursery.start_soon(one, i, rng.random() * 0.02, cancel_after)
    ran = [i for group in groups.groups for i in group]
    assert len(ran) == len(set(ran))  # no item written twice
    assert set(answered) | cancelled == set(range(1, 60))
    assert set(answered) <= set(ran)
    assert all(answered[i] == i * 10 for i in answered)
    assert writer.leaders == 0  # every trip slot given back
