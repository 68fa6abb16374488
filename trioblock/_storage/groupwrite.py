"""Concurrent block writes of one node, run together in worker-thread trips.

A node's writes (its own puts and its peers' ``PutBlock``\\ s) each cost a worker-thread
trip, and each trip its hand-offs between the Trio thread and a worker (the interpreter
lock passed back and forth) on top of the work. A :class:`GroupWriter` lets the writes
that wait at the same moment share a trip, in which ``writepath.write_group_sync``
writes them one after the other and fsyncs each directory they touched once:

- At most ``max_trips`` trips run at once. A write that finds one free leads a trip at
  once; the others queue. A leader's trip takes the queued writes (its own among them,
  in arrival order, at most ``max_group``) and hands every caller its own outcome. No
  timer, no delay: a group is what queued while the previous trips ran.
- A leader whose own write is answered leaves; if writes are still queued it hands its
  trip slot to the first of them, which leads the next trip. So no queued write is left
  without a leader, and a leader never works for others after its own answer.
- Each write's outcome is its own: one write's exception never reaches another.
- Cancellation: a queued write that is cancelled withdraws if no trip took it yet. One
  that a trip took is finished by that trip, and its caller waits for the end of the
  trip before the cancellation goes on (shielded): the caller holds the block's lock,
  which is never given back while the block is being written. A leader cancelled while
  waiting for a thread (its trip not started) puts the writes it took back in front of
  the queue for the next leader.
- :meth:`GroupWriter.call_many` queues several items of one caller at once (a batch of
  puts): the trips take them together, at most ``max_group`` a trip, with the writes of
  others queued around them; each item keeps its own outcome. The caller leads as a
  single call does (every trip slot handed to one of its items is its to use or hand
  on), and a cancellation withdraws its items no trip took and waits for those taken.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

import outcome
import trio

from .threads import run_blocking

I = TypeVar("I")  # noqa: E741 - the item type
R = TypeVar("R")

Group = Callable[[list[I]], list[outcome.Outcome[R]]]

__all__ = ["GroupWriter"]


class _Call(Generic[I, R]):
    __slots__ = ("item", "leads", "result", "run", "taken", "wake")

    def __init__(self, run: Group[I, R], item: I) -> None:
        self.run = run
        self.item = item
        self.result: outcome.Outcome[R] | None = None
        self.taken = False
        #: holds a trip slot: leads trips until its own call is answered
        self.leads = False
        self.wake = trio.Event()


def _run_group(run: Group[I, R], items: list[I]) -> list[outcome.Outcome[R]]:
    """``run(items)``; should it raise (it captures each item's outcome: a bug), every
    item gets the error rather than the trip being taken for one that never started."""
    try:
        results = run(items)
    except Exception as exc:
        return [outcome.Error(exc) for _ in items]
    if len(results) != len(items):
        error = RuntimeError(f"a group of {len(items)} writes gave {len(results)} outcomes")
        return [outcome.Error(error) for _ in items]
    return results


def _claim_leads(calls: list[_Call[I, R]]) -> int:
    """How many trip slots were handed to these calls (each taken back from its call)."""
    claimed = 0
    for call in calls:
        if call.leads:
            call.leads = False
            claimed += 1
    return claimed


async def _wait_any(calls: list[_Call[I, R]]) -> None:
    """Until any of ``calls`` is answered or handed a trip slot."""
    wake = trio.Event()
    for call in calls:
        call.wake = wake
    await wake.wait()


class GroupWriter(Generic[I, R]):
    """Runs ``run(items)`` for concurrent :meth:`call`\\ s, several items per trip.

    Every call of one writer passes the same kind of ``run`` (a leader runs the first
    taken call's for the items it takes); it keeps no reference to one once its call has
    returned.
    """

    def __init__(
        self, *, limiter: trio.CapacityLimiter, max_trips: int = 2, max_group: int = 32
    ) -> None:
        if max_trips < 1 or max_group < 1:
            raise ValueError("max_trips and max_group must be at least 1")
        self._limiter = limiter
        self._max_trips = max_trips
        self._max_group = max_group
        self._queue: list[_Call[I, R]] = []
        self._trips = 0
        #: trips run so far, and the items they wrote (for metrics and tests)
        self.trips_run = 0
        self.items_run = 0

    @property
    def leaders(self) -> int:
        """Calls holding a trip slot now (0 when no write is under way)."""
        return self._trips

    async def call(self, run: Group[I, R], item: I) -> R:
        """The outcome of ``item`` in a worker-thread trip, possibly with others'."""
        call: _Call[I, R] = _Call(run, item)
        self._queue.append(call)
        try:
            if self._trips < self._max_trips:
                self._trips += 1
                call.leads = True
            else:
                await self._wait(call)
            while call.result is None:
                if not self._queue:
                    # Our item is in another leader's trip: wait for it.
                    await self._wait(call)
                    continue
                await self._trip()
        except BaseException:
            if call.taken and call.result is None:
                # Being written in a trip: the caller holds the block's lock, never given
                # back while the block is written. Wait for the trip, then go on.
                # A trip that never started (its leader cancelled while waiting for a
                # thread) puts the item back: it is then withdrawn like a queued one.
                with trio.CancelScope(shield=True):
                    while call.taken and call.result is None:
                        await self._wait(call)
            raise
        finally:
            if call.result is None and not call.taken:
                self._queue.remove(call)
            if call.leads:
                self._hand_over()
        return call.result.unwrap()

    async def call_many(self, run: Group[I, R], items: list[I]) -> list[outcome.Outcome[R]]:
        """The outcome of every item of ``items`` (in order), queued together so that
        trips take them together (module docstring); errors are returned, not raised."""
        calls: list[_Call[I, R]] = [_Call(run, item) for item in items]
        if not calls:
            return []
        self._queue.extend(calls)
        held = 0  # trip slots this caller holds
        try:
            if self._trips < self._max_trips:
                self._trips += 1
                held = 1
            while True:
                held += _claim_leads(calls)
                if all(call.result is not None for call in calls):
                    break
                if held and self._queue:
                    await self._trip()
                else:
                    await _wait_any(calls)  # answered, handed a slot, or taken meanwhile
        except BaseException:
            self._withdraw(calls, held)
            held = 0
            if any(call.taken and call.result is None for call in calls):
                # Items being written in a trip: their locks are held by the caller,
                # never given back while a block is written. Wait, then go on.
                with trio.CancelScope(shield=True):
                    while any(call.taken and call.result is None for call in calls):
                        await _wait_any(calls)
                        self._withdraw(calls, 0)
            raise
        finally:
            self._withdraw(calls, held)
        return [call.result for call in calls if call.result is not None]

    def _withdraw(self, calls: list[_Call[I, R]], held: int) -> None:
        """Take out the items no trip took, then hand on every slot held (``held`` and
        the slots handed to the caller's items meanwhile)."""
        for call in calls:
            if call.result is None and not call.taken and call in self._queue:
                self._queue.remove(call)
        for _ in range(held + _claim_leads(calls)):
            self._hand_over()

    async def _wait(self, call: _Call[I, R]) -> None:
        call.wake = trio.Event()
        await call.wake.wait()

    async def _trip(self) -> None:
        batch = self._queue[: self._max_group]
        del self._queue[: len(batch)]
        for call in batch:
            call.taken = True
        try:
            results = await run_blocking(
                _run_group, batch[0].run, [call.item for call in batch], limiter=self._limiter
            )
        except BaseException:
            # Every outcome is captured in the thread and a trip once started runs to
            # completion: an exception here means it never started. Back in front.
            for call in batch:
                call.taken = False
            self._queue[:0] = batch
            raise
        self.trips_run += 1
        self.items_run += len(batch)
        for call, result in zip(batch, results, strict=True):
            call.result = result
            call.wake.set()

    def _hand_over(self) -> None:
        """Give this trip slot to the first queued call (it leads next), or free it."""
        for call in self._queue:
            if not call.leads:
                call.leads = True
                call.wake.set()
                return
        self._trips -= 1
