"""Concurrent calls of one blocking function, run together in worker-thread trips.

A worker-thread trip has a fixed cost on top of its work: the hand-off to a thread, the
thread's wait for the interpreter lock, the wake-up of the Trio thread with the result.
For a 4 KiB read (about 20 µs of work) that cost is most of the call. A
:class:`TripBatcher` lets calls that arrive while trips are under way share the next
trip:

- What a call costs is followed as a moving average of the thread's CPU time per call
  (CPU time, not wall time: under load the waits for the interpreter lock would make
  every call look expensive). A call costing ``cheap_call`` (default
  :data:`CHEAP_CALL`) or more goes straight to a trip of its own: large blocks gain
  nothing from sharing, and their reads run side by side in up to the limiter's
  threads.
- Cheaper calls queue. At most ``cheap_trips`` trips run at once (each also takes a
  token of the store's limiter); a call that finds one free leads a trip, which takes
  the queued calls (its own among them, in arrival order) up to about
  :data:`TRIP_WORK` of work by the same average and at most ``max_batch``, runs each
  in one worker-thread call and hands every caller its own result or exception. Other
  calls wait for their result.
- A leader whose own call is answered leaves; if calls are still queued it hands its
  trip over to the first of them, which leads the next trip. So no queued call is left
  without a leader, and a leader never works for others after its own answer.
- Each argument's outcome is its own: one call's exception never reaches another.
- Cancellation: a waiting call that is cancelled withdraws its argument if no trip took
  it yet (a trip that took it finishes, and its result is dropped); a leader cancelled
  during its trip still hands out the trip's results first (a trip, once started, runs
  to completion), then leaves as above; one cancelled before its trip started puts the
  arguments it took back in front of the queue for the next leader.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final, Generic, TypeVar

import outcome
import trio

from .threads import run_blocking

A = TypeVar("A")
R = TypeVar("R")

__all__ = ["CHEAP_CALL", "TripBatcher"]

#: Seconds of thread time under which a call counts as cheap (see the module docstring).
CHEAP_CALL: Final = 250e-6
#: Seconds of work a trip is given (calls per trip: this over a call's average cost).
TRIP_WORK: Final = 1e-3
#: Weight of the newest trip in the moving average of a call's cost.
_SMOOTHING: Final = 0.2


class _Call(Generic[A, R]):
    __slots__ = ("arg", "fn", "leads", "result", "taken", "wake")

    def __init__(self, fn: Callable[[A], R], arg: A) -> None:
        self.fn = fn
        self.arg = arg
        self.result: outcome.Outcome[R] | None = None
        self.taken = False
        #: holds a trip slot: leads trips until its own call is answered
        self.leads = False
        self.wake = trio.Event()


def _run_all(
    calls: list[tuple[Callable[[A], R], A]],
) -> tuple[list[outcome.Outcome[R]], float]:
    """Every call's outcome, and the thread's CPU time per call (not wall time: the
    waits for the interpreter lock would make every call look expensive under load)."""
    started = time.thread_time()
    results: list[outcome.Outcome[R]] = [outcome.capture(fn, arg) for fn, arg in calls]
    return results, (time.thread_time() - started) / len(calls)


class TripBatcher(Generic[A, R]):
    """Runs ``fn(arg)`` for concurrent :meth:`call`\\ s, several per worker-thread trip.

    It keeps no reference to the functions it ran (an object whose methods it runs is
    not kept alive by it).
    """

    def __init__(
        self,
        *,
        limiter: trio.CapacityLimiter,
        max_trips: int,
        cheap_trips: int = 2,
        max_batch: int = 32,
        cheap_call: float = CHEAP_CALL,
    ) -> None:
        if cheap_trips < 1 or max_trips < 1 or max_batch < 1:
            raise ValueError("max_trips, cheap_trips and max_batch must be at least 1")
        self._limiter = limiter
        self._max_trips = max_trips
        #: trips at once while calls are cheap (may be changed at any time)
        self.cheap_trips = min(cheap_trips, max_trips)
        self._max_batch = max_batch
        self._cheap_call = cheap_call
        #: moving average of a call's thread time (starts "expensive": no batching
        #: until calls are seen to be cheap)
        self.call_seconds = cheap_call
        self._queue: list[_Call[A, R]] = []
        self._trips = 0
        #: trips run so far (for tests and metrics)
        self.trips_run = 0

    @property
    def leaders(self) -> int:
        """Calls holding a trip slot now (0 when no call is under way)."""
        return self._trips

    async def call(self, fn: Callable[[A], R], arg: A) -> R:
        """``fn(arg)`` in a worker thread, possibly in one trip with other calls."""
        if not self._cheap():
            # Expensive calls gain nothing from sharing: a trip of their own, at once.
            results: list[outcome.Outcome[R]]
            results, seconds = await run_blocking(_run_all, [(fn, arg)], limiter=self._limiter)
            self._observe(seconds)
            self.trips_run += 1
            value: R = results[0].unwrap()
            return value
        call: _Call[A, R] = _Call(fn, arg)
        self._queue.append(call)
        try:
            if self._trips < self._trip_limit():
                self._trips += 1
                # Holds a slot from now on: never to be handed another one while its own
                # call waits in the queue behind others' (a second slot would be lost).
                call.leads = True
            else:
                await self._wait(call)
            while call.result is None:
                if not self._queue:
                    # Our argument is in another leader's trip: wait for it.
                    await self._wait(call)
                    continue
                await self._trip()
        finally:
            if call.result is None and not call.taken:
                self._queue.remove(call)
            if call.leads:
                self._hand_over()
        return call.result.unwrap()

    def _trip_limit(self) -> int:
        return self.cheap_trips if self._cheap() else self._max_trips

    def _observe(self, seconds: float) -> None:
        self.call_seconds += _SMOOTHING * (seconds - self.call_seconds)

    def _cheap(self) -> bool:
        return self.call_seconds < self._cheap_call

    async def _wait(self, call: _Call[A, R]) -> None:
        call.wake = trio.Event()
        await call.wake.wait()

    async def _trip(self) -> None:
        # About TRIP_WORK of work per trip: cheap calls share one, expensive ones get one
        # each (side by side in as many threads as there are trips, not one after the
        # other in one).
        per_call = self.call_seconds
        size = self._max_batch if per_call <= 0 else int(TRIP_WORK / per_call)
        batch = self._queue[: max(1, min(self._max_batch, size))]
        del self._queue[: len(batch)]
        for call in batch:
            call.taken = True
        try:
            results, seconds = await run_blocking(
                _run_all, [(call.fn, call.arg) for call in batch], limiter=self._limiter
            )
        except BaseException:
            # Every argument's outcome is captured in the thread, and a trip once started
            # runs to completion: an exception here means it never started (the leader
            # was cancelled while waiting for a thread). The arguments go back in front.
            for call in batch:
                call.taken = False
            self._queue[:0] = batch
            raise
        self.trips_run += 1
        self._observe(seconds)
        for call, result in zip(batch, results, strict=True):
            call.result = result
            call.wake.set()

    def _hand_over(self) -> None:
        """Give this trip slot to the first queued call (it leads next), or free it.

        While the trip limit is lower than the trips running (calls turned cheap), the
        slot is freed: waiting calls are led by the trips that remain.
        """
        if self._trips <= self._trip_limit():
            for call in self._queue:
                if not call.leads:
                    call.leads = True
                    call.wake.set()
                    return
        self._trips -= 1
