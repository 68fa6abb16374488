"""The node's one clock.

Every delay and every persisted timestamp (msec) is the wall-clock time read once, plus
Trio's clock since then. The anchor is read once per ``trio.run`` and shared by every
node opened in it: a node restarted inside the same run (a test, a simulation) continues
the same timeline instead of jumping back to the wall clock, and the nodes of an
in-process cluster agree on the time. Under ``trio.testing.MockClock`` the whole node —
GC delays, back-off, scrub intervals, RPC timeouts — runs in virtual time.
"""

from __future__ import annotations

import math
import time

import trio

_ANCHOR: trio.lowlevel.RunVar[tuple[int, float]] = trio.lowlevel.RunVar("trioblock_clock_anchor")


class NodeClock:
    def __init__(self, wall_msec: int | None = None) -> None:
        if wall_msec is not None:
            self._wall0, self._trio0 = wall_msec, trio.current_time()
            return
        try:
            self._wall0, self._trio0 = _ANCHOR.get()
        except LookupError:
            self._wall0, self._trio0 = int(time.time() * 1000), trio.current_time()
            _ANCHOR.set((self._wall0, self._trio0))

    def now_msec(self) -> int:
        return self._wall0 + int((trio.current_time() - self._trio0) * 1000)

    def trio_time_of(self, msec: int) -> float:
        """The earliest Trio clock reading at which ``now_msec()`` has reached ``msec``.

        Floating-point rounding can put ``trio0 + (msec - wall0) / 1000`` a hair before
        that instant; a worker waking there would find its entry not yet due and spin
        (under a MockClock, forever). Step up to the first float that is due.
        """
        target = msec - self._wall0
        t = self._trio0 + target / 1000
        while int((t - self._trio0) * 1000) < target:
            t = math.nextafter(t, math.inf)
        return t
