"""A byte budget: backpressure on block data held in memory for peers.

``ram_buffer_max`` bounds the bytes of block data in flight to (or from) peers. A put
waits for room before it sends instead of queueing without bound; a single block larger
than the whole budget is admitted alone, so it can never wait forever.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio


class ByteBudget:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.in_use = 0
        self._waiters = trio.lowlevel.ParkingLot()

    async def acquire(self, n: int) -> int:
        """Take ``n`` bytes (at most the capacity); return what was taken."""
        n = min(n, self.capacity)
        await trio.lowlevel.checkpoint_if_cancelled()
        while self.in_use + n > self.capacity:
            await self._waiters.park()
        self.in_use += n
        return n

    def release(self, n: int) -> None:
        self.in_use -= n
        self._waiters.unpark_all()

    @asynccontextmanager
    async def hold(self, n: int) -> AsyncIterator[int]:
        taken = await self.acquire(n)
        try:
            yield taken
        finally:
            self.release(taken)
