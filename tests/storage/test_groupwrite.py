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


async def test_many_items_of_one_caller_share_trips_with_their_own_outcomes() -> None:
    groups = Groups()
    writer: GroupWriter[int, int] = GroupWriter(
        limiter=trio.CapacityLimiter(4), max_trips=1, max_group=4
    )
    results: dict[str, object] = {}

    async def many(items: list[int]) -> None:
        results["many"] = [
            r.value if isinstance(r, outcome.Value) else str(r.error)
            for r in await writer.call_many(groups, items)
        ]

    async def one(i: int) -> None:
        results[str(i)] = await writer.call(groups, i)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(one, 0)
        await trio.to_thread.run_sync(groups.entered.wait)
        nursery.start_soon(many, [1, -2, 3, 4, 5, 6])
        await trio.sleep(0.01)
        nursery.start_soon(one, 7)
        await trio.sleep(0.05)
        groups.open.set()
    # Taken in arrival order, at most four a trip; the batch's items together.
    assert groups.groups == [[0], [1, -2, 3, 4], [5, 6, 7]]
    assert results == {"0": 0, "7": 70, "many": [10, "item -2", 30, 40, 50, 60]}
    assert writer.leaders == 0
    assert await writer.call_many(groups, []) == []


async def test_a_cancelled_batch_withdraws_what_no_trip_took_and_waits_for_the_rest() -> None:
    groups = Groups()
    writer: GroupWriter[int, int] = GroupWriter(
        limiter=trio.CapacityLimiter(4), max_trips=1, max_group=2
    )
    left_while_running: list[bool] = []

    async def cancelled(items: list[int], scope: trio.CancelScope) -> None:
        with scope:
            await writer.call_many(groups, items)
        left_while_running.append(any(i in groups.running for i in items))

    async with trio.open_nursery() as nursery:
        scope = trio.CancelScope()
        nursery.start_soon(cancelled, [0, 1, 2, 3], scope)  # 0, 1 in the first trip
        await trio.to_thread.run_sync(groups.entered.wait)
        scope.cancel()
        await trio.sleep(0.05)
        assert left_while_running == []  # still waiting for the trip writing 0 and 1
        groups.open.set()
    assert left_while_running == [False]
    assert groups.groups == [[0, 1]]  # 2 and 3 withdrawn, never written
    assert writer.leaders == 0
    assert [r.unwrap() for r in await writer.call_many(groups, [4, 5, 6])] == [40, 50, 60]


@pytest.mark.parametrize("seed", range(60))
async def test_random_batches_singles_and_cancellations_lose_and_repeat_nothing(
    seed: int,
) -> None:
    rng = random.Random(seed)
    groups = Groups()
    groups.open.set()
    groups.open9.set()
    writer: GroupWriter[int, int] = GroupWriter(
        limiter=trio.CapacityLimiter(3), max_trips=rng.randint(1, 3), max_group=rng.randint(1, 6)
    )
    answered: dict[int, int] = {}
    cancelled: set[int] = set()

    async def run(items: list[int], delay: float, cancel_after: float | None) -> None:
        await trio.sleep(delay)
        with trio.CancelScope() as scope:
            if cancel_after is not None:
                scope.deadline = trio.current_time() + cancel_after
            if len(items) == 1:
                answered[items[0]] = await writer.call(groups, items[0])
            else:
                results = await writer.call_many(groups, items)
                answered.update((i, r.unwrap()) for i, r in zip(items, results, strict=True))
        if scope.cancelled_caught:
            cancelled.update(items)
            assert not any(i in groups.running for i in items)

    async with trio.open_nursery() as nursery:
        i = 1
        while i < 120:
            n = rng.choice([1, 1, 2, 5, 9])
            cancel_after = rng.choice([None, None, 0.0, 0.001, 0.003])
            nursery.start_soon(run, list(range(i, i + n)), rng.random() * 0.02, cancel_after)
            i += n
    ran = [i for group in groups.groups for i in group]
    assert len(ran) == len(set(ran))  # no item written twice
    assert set(answered) | cancelled == set(range(1, i))
    assert set(answered) <= set(ran)
    assert all(answered[i] == i * 10 for i in answered)
    assert writer.leaders == 0  # every trip slot given back


@pytest.mark.parametrize("batch", [False, True])
async def test_a_cancelled_caller_whose_trip_never_started_withdraws_and_hands_on(
    batch: bool,
) -> None:
    """Regression: a caller cancelled while its item was taken by a trip waiting for a
    thread, then put back (that trip's leader cancelled too), waited for an answer
    that never came, holding the trip slot it was handed: every later write hung."""
    groups = Groups()
    groups.open.set()
    groups.open9.set()
    limiter = trio.CapacityLimiter(1)
    writer: GroupWriter[int, int] = GroupWriter(limiter=limiter, max_trips=1)
    blocker = object()
    await limiter.acquire_on_behalf_of(blocker)  # every trip waits for a thread
    scopes = {name: trio.CancelScope() for name in ("a", "b", "c")}

    async def caller(name: str, items: list[int]) -> None:
        with scopes[name]:
            if batch and name == "c":
                await writer.call_many(groups, items)
            else:
                await writer.call(groups, items[0])

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(caller, "a", [1])  # leads; its trip waits for the limiter
            await trio.sleep(0.01)
            nursery.start_soon(caller, "b", [2])
            await trio.sleep(0.01)
            nursery.start_soon(caller, "c", [3, 4])
            await trio.sleep(0.01)
            scopes["a"].cancel()  # 1 back in the queue and withdrawn; b leads, takes 2, 3, 4
            await trio.sleep(0.01)
            scopes["c"].cancel()  # taken by b's trip, not started: waits for it
            await trio.sleep(0.01)
            scopes["b"].cancel()  # b's trip never starts: 3 (and 4) back in the queue
            await trio.sleep(0.01)
        limiter.release_on_behalf_of(blocker)
        assert writer.leaders == 0
        assert await writer.call(groups, 5) == 50  # the writer still works
    assert groups.groups == [[5]]
