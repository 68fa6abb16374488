"""Per-block mutation locks.

Writes, deletions and quarantines of one block hold its lock so they never interleave.
Locks are created on demand and dropped when nobody holds or waits for them, so memory
stays proportional to the blocks being mutated right now.

``trio.Lock`` is not re-entrant: code that holds a block's lock must call the
``*_locked`` variants of storage operations, never the ones that take the lock again.
A task that tries to take a block's lock it already holds gets a ``RuntimeError``
naming the block at once (instead of a deadlock or Trio's anonymous error).

A worker thread can hold a block's lock too, for the length of one synchronous step
(:meth:`KeyedLock.try_claim` / :meth:`KeyedLock.release_claim`): a put that learns its
block's hash in a worker thread writes the block in the same trip when nobody holds or
waits for that block, instead of returning to the Trio thread for the lock first. A
claim never waits: when the block is busy it fails and the caller takes the lock the
usual way. A task asking for a claimed block waits until the thread releases it.
Claims and the table of Trio locks are guarded by one ``threading.Lock``, held only
for dictionary updates.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio


class KeyedLock:
    def __init__(self) -> None:
        self._locks: dict[bytes, tuple[trio.Lock, int]] = {}
        #: blocks claimed by worker threads, with the event their waiters wait on
        self._claims: dict[bytes, trio.Event | None] = {}
        self._mutex = threading.Lock()

    @asynccontextmanager
    async def hold(self, key: bytes) -> AsyncIterator[None]:
        key = bytes(key)
        while (released := self._enter(key)) is not None:
            await released.wait()
        lock = self._locks[key][0]
        try:
            async with lock:
                yield
        finally:
            with self._mutex:
                lock, users = self._locks[key]
                if users == 1:
                    del self._locks[key]
                else:
                    self._locks[key] = (lock, users - 1)

    def _enter(self, key: bytes) -> trio.Event | None:
        """Count the calling task as a user of ``key``'s lock; or, while a worker thread
        claims it, the event to wait for before trying again."""
        with self._mutex:
            if key in self._claims:
                released = self._claims[key]
                if released is None:
                    released = self._claims[key] = trio.Event()
                return released
            lock, users = self._locks.get(key, (None, 0))
            if lock is not None and lock.statistics().owner is trio.lowlevel.current_task():
                raise RuntimeError(
                    f"the lock of block {key.hex()} is already held by this task: "
                    "block locks are not re-entrant (call the *_locked variant instead)"
                )
            self._locks[key] = (lock or trio.Lock(), users + 1)
            return None

    def try_claim(self, key: bytes) -> bool:
        """Take ``key``'s lock for the calling worker thread if nobody holds or waits for
        it (False otherwise: nothing taken). Release with :meth:`release_claim`."""
        key = bytes(key)
        with self._mutex:
            if key in self._locks or key in self._claims:
                return False
            self._claims[key] = None
            return True

    def release_claim(self, key: bytes, token: trio.lowlevel.TrioToken) -> None:
        """Give back a claim taken by :meth:`try_claim`; tasks that waited for it are
        woken on the Trio thread of ``token``."""
        with self._mutex:
            released = self._claims.pop(bytes(key))
        if released is not None:
            token.run_sync_soon(released.set)

    def locked(self, key: bytes) -> bool:
        """Whether a task or a worker thread holds ``key``'s lock."""
        key = bytes(key)
        with self._mutex:
            if key in self._claims:
                return True
            entry = self._locks.get(key)
            return entry is not None and entry[0].locked()

    def __len__(self) -> int:
        with self._mutex:
            return len(self._locks) + len(self._claims)
