"""The one door through which blocking work leaves the Trio thread.

Disk I/O, fsync, hashing, zstd and SQLite all go through :func:`run_blocking`, which
runs them in a worker thread bounded by a ``trio.CapacityLimiter``. Once started, the
work runs to completion even if the caller is cancelled (so a durable write is never
abandoned half-way); the cancellation is delivered at the caller's next checkpoint.

Under ``trio.testing.MockClock`` the work runs inline on the Trio thread instead.
Autojump treats a task waiting for a thread as blocked and would leap virtual time past
pending deadlines while the disk works; running inline keeps virtual time still during
I/O, which makes timed tests deterministic. Real clocks keep the threads.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import trio
import trio.testing

T = TypeVar("T")


def running_under_mock_clock() -> bool:
    try:
        return isinstance(trio.lowlevel.current_clock(), trio.testing.MockClock)
    except RuntimeError:
        return False


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
    return await trio.to_thread.run_sync(fn, *args, limiter=limiter)
