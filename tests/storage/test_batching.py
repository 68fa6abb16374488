"""Concurrent blocking calls sharing worker-thread trips (``TripBatcher``).

Real threads and the real clock: under a MockClock the work runs inline and no trip is
ever shared.
"""

from __future__ import annotations

import random
import threading
import time

import pytest
import trio
import trio.testing

from trioblock._storage.batching import TripBatcher


def cheap_batcher(
    *, max_trips: int, limiter: trio.CapacityLimiter | None = None, **options: int
) -> TripBatcher[int, int]:
    """A batcher whose calls always count as cheap: these tests are about sharing trips,
    not about the cost policy."""
    batcher: TripBatcher[int, int] = TripBatcher(
        limiter=limiter or trio.CapacityLimiter(8),
        max_trips=max_trips,
        cheap_call=60.0,
        **options,
    )
    batcher.call_seconds = 0.0
    return batcher


class Gate:
    """A blocking function whose first call waits until the test opens the gate."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.open = threading.Event()
        self.calls: list[int] = []
        self.lock = threading.Lock()
        self.running = 0
        self.most_running = 0

    def __call__(self, arg: int) -> int:
        with self.lock:
            self.calls.append(arg)
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        try:
            if arg == 0:
                self.entered.set()
                self.open.wait(10)
            if arg < 0:
                raise ValueError(f"bad argument {arg}")
            return arg * 10
        finally:
            with self.lock:
                self.running -= 1


async def test_calls_queued_behind_a_busy_trip_share_the_next_one() -> None:
    gate = Gate()
    batcher = cheap_batcher(max_trips=1)
    results: dict[int, int] = {}

    async def call(arg: int) -> None:
        results[arg] = await batcher.call(gate, arg)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(call, 0)
        await trio.to_thread.run_sync(gate.entered.wait, 10)
        for arg in range(1, 11):
            nursery.start_soon(call, arg)
        await trio.testing.wait_all_tasks_blocked()
        gate.open.set()
    assert results == {arg: arg * 10 for arg in range(11)}
    assert batcher.trips_run == 2  # the first call alone, then the ten queued together
    assert sorted(gate.calls) == list(range(11))


async def test_an_exception_reaches_only_its_own_call() -> None:
    gate = Gate()
    gate.open.set()
    batcher = cheap_batcher(max_trips=1)
    outcomes: dict[int, object] = {}

    async def call(arg: int) -> None:
        try:
            outcomes[arg] = await batcher.call(gate, arg)
        except ValueError as exc:
            outcomes[arg] = exc

    async with trio.open_nursery() as nursery:
        for arg in (3, -1, 4, -2, 5):
            nursery.start_soon(call, arg)
    assert outcomes[3] == 30 and outcomes[4] == 40 and outcomes[5] == 50
    assert isinstance(outcomes[-1], ValueError) and "-1" in str(outcomes[-1])
    assert isinstance(outcomes[-2], ValueError) and "-2" in str(outcomes[-2])


async def test_a_cancelled_waiting_call_is_withdrawn_and_the_others_are_answered() -> None:
    gate = Gate()
    batcher = cheap_batcher(max_trips=1)
    results: dict[int, int] = {}
    scopes = {arg: trio.CancelScope() for arg in range(4)}

    async def call(arg: int) -> None:
        with scopes[arg]:
            results[arg] = await batcher.call(gate, arg)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(call, 0)
        await trio.to_thread.run_sync(gate.entered.wait, 10)
        for arg in (1, 2, 3):  # queued in this order
            nursery.start_soon(call, arg)
            await trio.testing.wait_all_tasks_blocked()
        scopes[2].cancel()  # queued, not taken by any trip yet
        await trio.testing.wait_all_tasks_blocked()
        gate.open.set()
    assert results == {0: 0, 1: 10, 3: 30}
    assert 2 not in gate.calls  # withdrawn: never run


async def test_a_leader_cancelled_before_its_trip_hands_its_calls_on() -> None:
    """A leader that took queued calls is cancelled while waiting for a thread (the
    limiter is taken): the calls it took go to the next leader, none is lost."""
    gate = Gate()
    limiter = trio.CapacityLimiter(1)
    batcher = cheap_batcher(max_trips=1, limiter=limiter)
    results: dict[int, int] = {}
    scopes = {arg: trio.CancelScope() for arg in range(4)}
    holding = trio.Event()
    release = trio.Event()

    async def call(arg: int) -> None:
        with scopes[arg]:
            results[arg] = await batcher.call(gate, arg)

    async def hold_the_thread() -> None:
        async with limiter:
            holding.set()
            await release.wait()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(call, 0)  # leads a trip, held in the thread by the gate
            await trio.to_thread.run_sync(gate.entered.wait, 10)
            for arg in (1, 2, 3):  # queued behind it, in this order
                nursery.start_soon(call, arg)
                await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(hold_the_thread)  # next in line for the limiter
            await trio.testing.wait_all_tasks_blocked()
            gate.open.set()
            # Call 0's trip ends; call 1 now leads a trip of 1, 2 and 3, which waits for
            # the limiter this task holds.
            await holding.wait()
            await trio.testing.wait_all_tasks_blocked()
            assert results == {0: 0}
            scopes[1].cancel()
            await trio.testing.wait_all_tasks_blocked()
            release.set()
    assert results == {0: 0, 2: 20, 3: 30}
    assert sorted(gate.calls) == [0, 2, 3]


async def test_cheap_calls_run_in_few_trips_at_once() -> None:
    gate = Gate()
    gate.open.set()
    batcher = TripBatcher(limiter=trio.CapacityLimiter(8), max_trips=8, cheap_trips=1)

    async def caller(first: int) -> None:
        for arg in range(first, first + 50):
            assert await batcher.call(gate, arg) == arg * 10

    # Warm-up: the calls are seen to be cheap.
    async with trio.open_nursery() as nursery:
        for task in range(16):
            nursery.start_soon(caller, 1 + task * 1000)
    assert batcher.call_seconds < 250e-6
    gate.most_running = 0
    async with trio.open_nursery() as nursery:
        for task in range(16):
            nursery.start_soon(caller, 100_000 + task * 1000)
    assert gate.most_running == 1


async def test_expensive_calls_each_get_a_trip_of_their_own() -> None:
    gate = Gate()
    gate.open.set()
    # Every call counts as expensive: no sharing, up to max_trips side by side.
    batcher = TripBatcher(limiter=trio.CapacityLimiter(8), max_trips=4, cheap_call=0.0)

    async def caller(first: int) -> None:
        for arg in range(first, first + 10):
            assert await batcher.call(gate, arg) == arg * 10

    async with trio.open_nursery() as nursery:
        for task in range(8):
            nursery.start_soon(caller, 1 + task * 100)
    assert batcher.trips_run == 80


@pytest.mark.parametrize("seed", range(5))
async def test_random_cancellations_never_lose_or_mix_up_an_answer(seed: int) -> None:
    rng = random.Random(seed)
    gate = Gate()
    gate.open.set()
    batcher = TripBatcher(limiter=trio.CapacityLimiter(3), max_trips=2, max_batch=4)
    answered: dict[int, int] = {}
    cancelled: set[int] = set()

    async def call(arg: int, scope: trio.CancelScope) -> None:
        with scope:
            answered[arg] = await batcher.call(gate, arg)
        if scope.cancelled_caught:
            cancelled.add(arg)

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            scopes = []
            for arg in range(1, 201):
                scope = trio.CancelScope()
                scopes.append(scope)
                nursery.start_soon(call, arg, scope)
                if rng.random() < 0.3:
                    await trio.lowlevel.checkpoint()
                if rng.random() < 0.2:
                    rng.choice(scopes).cancel()
    assert all(answered[arg] == arg * 10 for arg in answered)
    assert set(answered) | cancelled == set(range(1, 201))


@pytest.mark.parametrize("cheap_call", [0.0, 60.0])
async def test_many_callers_never_stall(cheap_call: float) -> None:
    """A leader's own call can wait in the queue behind others' while it serves them:
    it must never be handed a second trip slot (a slot lost that way stalled every
    later call once all slots were lost)."""
    gate = Gate()
    gate.open.set()
    batcher = TripBatcher(
        limiter=trio.CapacityLimiter(8), max_trips=2, max_batch=3, cheap_call=cheap_call
    )

    async def caller(first: int) -> None:
        for arg in range(first, first + 100):
            assert await batcher.call(gate, arg) == arg * 10

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for task in range(16):
                nursery.start_soon(caller, 1 + task * 1000)
        # Every slot came back.
        assert batcher.leaders == 0
        assert await batcher.call(gate, 7) == 70
        assert batcher.leaders == 0


async def test_callers_never_stall_while_the_cost_keeps_changing() -> None:
    """Calls that turn cheap and expensive by turns (the trip limit rises and falls
    while calls wait): every call is answered and every slot comes back."""

    def sometimes_slow(arg: int) -> int:
        if arg % 23 == 0:
            time.sleep(0.01)
        return arg * 10

    batcher = TripBatcher(
        limiter=trio.CapacityLimiter(8),
        max_trips=4,
        cheap_trips=1,
        max_batch=3,
        cheap_call=0.001,
    )

    async def caller(first: int) -> None:
        for arg in range(first, first + 60):
            assert await batcher.call(sometimes_slow, arg) == arg * 10

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for task in range(16):
                nursery.start_soon(caller, 1 + task * 1000)
    assert batcher.leaders == 0


async def test_a_leader_whose_call_waits_behind_others_is_never_given_a_second_slot() -> None:
    """Regression: when the trip limit rose while calls waited, a call arriving then led
    trips for the calls ahead of it while its own waited in the queue; a leader leaving
    meanwhile handed it a second slot, which was never given back (once every slot was
    lost that way, all later calls waited forever)."""
    release = {arg: threading.Event() for arg in range(4)}
    started = {arg: threading.Event() for arg in range(4)}

    def held(arg: int) -> int:
        started[arg].set()
        release[arg].wait(10)
        return arg * 10

    batcher = cheap_batcher(max_trips=2, cheap_trips=1, max_batch=1)
    results: dict[int, int] = {}
    answered = {arg: trio.Event() for arg in range(4)}

    async def call(arg: int) -> None:
        results[arg] = await batcher.call(held, arg)
        answered[arg].set()

    async def wait_started(arg: int) -> None:
        await trio.to_thread.run_sync(started[arg].wait, 10)

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(call, 0)  # leads; its trip is held
            await wait_started(0)
            for arg in (1, 2):  # wait behind it
                nursery.start_soon(call, arg)
                await trio.testing.wait_all_tasks_blocked()
            batcher.cheap_trips = 2  # the limit rises while calls 1 and 2 wait
            nursery.start_soon(call, 3)  # leads at once, taking call 1 first
            await wait_started(1)
            release[0].set()  # call 0 answered: its slot goes to call 2
            await wait_started(2)
            release[2].set()  # call 2 answered while call 3 waits in the queue
            await answered[2].wait()
            release[1].set()
            release[3].set()
    assert results == {0: 0, 1: 10, 2: 20, 3: 30}
    assert batcher.leaders == 0
