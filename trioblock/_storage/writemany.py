"""The local write of a batch of puts (``put_blocks``): its blocks in one group.

Every block's lock is taken (in hash order, so two batches never wait on each other
in a circle), then the blocks are queued together on the store's grouped writes
(``GroupWriter.call_many``): a trip writes them one after the other and fsyncs each
``aa/bb`` directory they touched once, at most ``max_group`` blocks a trip. Each block
has its own outcome (a failed write or directory fsync fails the blocks it concerns
only). The locks are given back once every block's write has finished.
"""

from __future__ import annotations

import functools
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

import outcome

from .._core.block import DataBlock
from .._core.hashing import Hash
from .writepath import WriteOutcome, write_group_sync

if TYPE_CHECKING:
    from .blockfiles import BlockStore

__all__ = ["write_blocks"]


async def write_blocks(
    store: BlockStore, items: list[tuple[Hash, DataBlock]], written_at_msec: int
) -> list[outcome.Outcome[WriteOutcome]]:
    """Write each ``(hash, block)`` of ``items`` (distinct hashes, verified blocks)
    durably; the outcome of each, in order (a write's ``OSError`` is its outcome)."""
    if len({h for h, _b in items}) != len(items):
        raise ValueError("write_blocks takes each block once")
    async with AsyncExitStack() as stack:
        for h in sorted(h for h, _b in items):
            await stack.enter_async_context(store.locks.hold(h))
        return await store.writes.call_many(
            functools.partial(write_group_sync, store),
            [(h, block, written_at_msec, False) for h, block in items],
        )
