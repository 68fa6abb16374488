"""Per-block mutation locks.

Writes, deletions and quarantines of one block hold its lock so they never interleave.
Locks are created on demand and dropped when nobody holds or waits for them, so memory
stays proportional to the blocks being mutated right now.

``trio.Lock`` is not re-entrant: code that holds a block's lock must call the
``*_locked`` variants of storage operations, never the ones that take the lock again.
A task that tries to take a block's lock it already holds gets a ``RuntimeError``
naming the block at once (instead of a deadlock or Trio's anonymous error).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio


class KeyedLock:
    def __init__(self) -> None:
        self._locks: dict[bytes, tuple[trio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: bytes) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (None, 0))
        if lock is not None and lock.statistics().owner is trio.lowlevel.current_task():
            raise RuntimeError(
                f"the lock of block {bytes(key).hex()} is already held by this task: "
                "block locks are not re-entrant (call the *_locked variant instead)"
            )
        if lock is None:
            lock = trio.Lock()
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    def locked(self, key: bytes) -> bool:
        entry = self._locks.get(key)
        return entry is not None and entry[0].locked()

    def __len__(self) -> int:
        return len(self._locks)
