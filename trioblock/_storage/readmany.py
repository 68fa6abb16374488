"""Several blocks read in one worker-thread trip (a batched get, and its answer to a peer).

:func:`read_raw_many` reads the stored encoding of each hash, unverified (a peer's
``GetBlocks``: the asker verifies); :func:`read_verified_many` reads and verifies each
(a local batched get), quarantining a copy that fails. Both give one outcome per hash,
in order: the read, None when there is no copy, or the exception that failed that
block (``CorruptBlockError`` with its location, an ``OSError``); one block's failure
never reaches another.

Bounded: a trip stops once the blocks it read reach ``budget`` bytes (the block that
reaches it included), so it answers the first hashes only, at least one; the caller asks
for the rest in another trip. A trip that was started runs to completion (cancelling the
caller drops its result; nothing is changed by a read).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from .._core.block import DataBlock
from .._core.hashing import Hash
from ..errors import CorruptBlockError
from .blockfiles import BlockStore
from .paths import BlockLocation
from .threads import run_blocking

__all__ = ["read_raw_many", "read_verified_many"]

T = TypeVar("T")

Raw = tuple[DataBlock, BlockLocation]
Verified = tuple[bytes, DataBlock, BlockLocation]


def _read_many(
    read: Callable[[Hash], T | None],
    size: Callable[[T], int],
    hashes: list[Hash],
    budget: int,
) -> list[T | Exception | None]:
    out: list[T | Exception | None] = []
    total = 0
    for hash in hashes:
        if total >= budget:
            break
        try:
            found = read(hash)
        except Exception as exc:  # that block's outcome (OSError, CorruptBlockError)
            out.append(exc)
            continue
        if found is not None:
            total += size(found)
        out.append(found)
    return out


async def read_raw_many(
    store: BlockStore, hashes: list[Hash], budget: int
) -> list[Raw | Exception | None]:
    """The encoded copy of each of the first ``hashes``, unverified (see the module
    docstring); a copy over its size limit is ``CorruptBlockError``, unread."""
    return await run_blocking(
        _read_many,
        store.read_raw_sync,
        lambda found: len(found[0].payload),
        hashes,
        budget,
        limiter=store.limiter,
    )


async def read_verified_many(
    store: BlockStore, hashes: list[Hash], budget: int
) -> list[Verified | Exception | None]:
    """The verified plaintext of each of the first ``hashes`` (see the module
    docstring); a copy that fails is quarantined and its outcome is ``CorruptBlockError``."""
    found = await run_blocking(
        _read_many,
        store.read_verified_sync,
        lambda found: len(found[1].payload),
        hashes,
        budget,
        limiter=store.limiter,
    )
    for i, outcome in enumerate(found):
        if isinstance(outcome, CorruptBlockError) and isinstance(outcome.location, BlockLocation):
            try:
                await store.quarantine(outcome.location)
            except OSError as exc:
                # It cannot be set aside (EIO...): a failed local source, as for one get.
                found[i] = exc
    return found
