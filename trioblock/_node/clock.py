"""The node's one clock.

Every delay and every persisted timestamp (msec) is the wall-clock time read once when
the node opens, plus Trio's clock since then. Under ``trio.testing.MockClock`` the whole
node — GC delays, back-off, scrub intervals, RPC timeouts — runs in virtual time.
"""

from __future__ import annotations

import time

import trio


class NodeClock:
    def __init__(self, wall_msec: int | None = None) -> None:
        self._wall0 = int(time.time() * 1000) if wall_msec is None else wall_msec
        self._trio0 = trio.current_time()

    def now_msec(self) -> int:
        return self._wall0 + int((trio.current_time() - self._trio0) * 1000)

    def trio_time_of(self, msec: int) -> float:
        """The Trio clock reading at which ``now_msec()`` reaches ``msec``."""
        return self._trio0 + (msec - self._wall0) / 1000
