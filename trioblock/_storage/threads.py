"""The one door through which blocking work leaves the Trio thread.

Disk I/O, fsync, hashing, zstd and SQLite all go through :func:`run_blocking`, bounded by
a ``trio.CapacityLimiter``. Once started, the work runs to completion even if the caller
is cancelled (so a durable write is never abandoned half-way); the cancellation is
delivered at the caller's next checkpoint — the semantics of
``trio.to_thread.run_sync(..., abandon_on_cancel=False)``.

The threads come from a small pool of long-lived workers fed by a ``SimpleQueue``,
with results handed back through ``TrioToken.run_sync_soon``. A round trip through it
costs about half of ``trio.to_thread.run_sync``'s (measured in benchmarks/, see
docs/performance.md), which matters for 4 KiB blocks where the hand-off is a large part
of the work. Idle workers exit after a few seconds, so the pool shrinks to nothing when
no node is busy.

Under ``trio.testing.MockClock`` the work runs inline on the Trio thread instead.
Autojump treats a task waiting for a thread as blocked and would leap virtual time past
pending deadlines while the disk works; running inline keeps virtual time still during
I/O, which makes timed tests deterministic. Real clocks keep the threads.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import outcome
import trio
import trio.testing

T = TypeVar("T")

#: How long an idle pool thread waits for work before it exits.
IDLE_SECONDS = 5.0

_Job = tuple[Callable[..., Any], tuple[Any, ...], Callable[[outcome.Outcome[Any]], None]]


class _ThreadPool:
    """Long-lived worker threads; grows on demand, shrinks when idle."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0
        self._threads = 0

    def submit(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        deliver: Callable[[outcome.Outcome[Any]], None],
    ) -> None:
        with self._lock:
            if self._idle > 0:
                self._idle -= 1
            else:
                self._threads += 1
                threading.Thread(target=self._work, name="trioblock-blocking", daemon=True).start()
        self._jobs.put((fn, args, deliver))

    def _work(self) -> None:
        while True:
            try:
                fn, args, deliver = self._jobs.get(timeout=IDLE_SECONDS)
            except queue.Empty:
                with self._lock:
                    # Exit only if no job was promised to an idle thread meanwhile.
                    if self._idle > 0 and self._jobs.empty():
                        self._idle -= 1
                        self._threads -= 1
                        return
                continue
            deliver(outcome.capture(fn, *args))
            del fn, args, deliver
            with self._lock:
                self._idle += 1


_POOL = _ThreadPool()


def running_under_mock_clock() -> bool:
    try:
        return isinstance(trio.lowlevel.current_clock(), trio.testing.MockClock)
    except RuntimeError:
        return False


def _abort_fails(_raise_cancel: Any) -> trio.lowlevel.Abort:
    # The thread cannot be stopped: wait for it, deliver the cancellation afterwards.
    return trio.lowlevel.Abort.FAILED


async def run_blocking(
    fn: Callable[..., T], *args: object, limiter: trio.CapacityLimiter | None = None
) -> T:
    """Run ``fn(*args)`` off the Trio thread (inline under a MockClock)."""
    if running_under_mock_clock():
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            return fn(*args)
        finally:
            await trio.lowlevel.cancel_shielded_checkpoint()
    if limiter is None:
        limiter = trio.to_thread.current_default_thread_limiter()
    async with limiter:
        task = trio.lowlevel.current_task()
        token = trio.lowlevel.current_trio_token()

        def deliver(result: outcome.Outcome[Any]) -> None:
            token.run_sync_soon(trio.lowlevel.reschedule, task, result)

        _POOL.submit(fn, args, deliver)
        result: T = await trio.lowlevel.wait_task_rescheduled(_abort_fails)
        return result
