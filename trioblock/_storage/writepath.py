"""The write of one block by a put or a peer: one sequence on top of the copy decision.

1. **Look.** The stored tally's "before" look (``StoredTally.begin_seen``) gives, for
   each data directory, its ``aa/bb`` handle and the ``lstat`` of both names.
2. **Decide** on what was seen (``_core.copydecision.decide``). When there is nothing
   to keep, verify or replace (a new block: the common case), the copy is written into
   the primary directory's ``aa/bb`` from the handle already open, without looking
   again (``durable.place_in``).
3. **Otherwise** the first copy in lookup order is verified (a corrupt one is
   quarantined: a put is a chance to heal), and the decision taken again: the copy is
   kept (its mtime moved forward to the new "last written" time), or the new copy is
   written to the primary directory and the copies it supersedes are removed.

A copy in a read-only directory counts for nothing (its mtime cannot be refreshed),
nor does one in a failing directory: the block is written as if it were absent.

**Which directory** a new copy goes to is decided in one place, :func:`_into_a_dir`:
the primary when it is ok, else the next ok directory of the block's order
(``BlockStore.write_order``, ``_core.dirhealth.pick_dir``). A write that fails there
(its temp file removed by ``durable``) is told to the directory's health (``ENOSPC``
marks it full, repeated errors failing) and tried in the next directory; when none is
left the write fails with ``DiskError`` (``DiskFullError`` when a directory is full)
naming the directory. Every step goes through the store's ``Disk``; the caller holds
the block's lock, has verified the block and runs this in a worker thread.

**A group** of writes (:func:`write_group_sync`: the blocks whose writes were waiting at
the same moment, each under its own lock) is one worker-thread trip: each block
verified when it came from a peer, then written by the sequence above with its file
fsynced and renamed, but its directory's fsync left to the end of the group, where each
``aa/bb`` directory touched is fsynced once (``durable.sync_group_dirs``). Each block
has its own outcome: a failed verification or write fails that block only, a failed
directory fsync fails the blocks renamed into that directory in this group (the
directory is marked unsynced and its failure told to its health), never the others.
A lone write is written exactly as before (its directory fsynced at once, and a failure
there tried in the next directory).
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import outcome

from .._core.block import BlockHeader, DataBlock, decode_block
from .._core.copydecision import Action, Existing, decide
from .._core.disk import NotABlockFile
from .._core.hashing import Hash
from ..errors import DiskError
from .durable import DirSyncs, Placed, place_in, refresh_mtime, sync_group_dirs
from .fileops import regular_at
from .lookup import is_regular
from .paths import BlockLocation, block_name, subdir_names
from .stored import SeenDir, close_seen

if TYPE_CHECKING:
    from .blockfiles import BlockStore

T = TypeVar("T")


class WriteOutcome(enum.Enum):
    WRITTEN = "written"
    KEPT = "kept"
    REPLACED = "replaced"


_OUTCOMES = {
    Placed.KEPT: WriteOutcome.KEPT,
    Placed.WRITTEN: WriteOutcome.WRITTEN,
    Placed.REPLACED: WriteOutcome.REPLACED,
}


#: One write of a group: the block's hash, the block, its "last written" time in
#: milliseconds, and whether it is to be verified first (a block from a peer).
GroupItem = tuple[Hash, DataBlock, int, bool]


def write_group_sync(
    store: BlockStore, items: list[GroupItem]
) -> list[outcome.Outcome[WriteOutcome]]:
    """Write every block of ``items`` (module docstring, "A group"): the outcome of
    each, in order. The caller holds every block's lock."""
    if len(items) == 1 or not store.fsync:
        return [outcome.capture(_write_item, store, item, None) for item in items]
    syncs = DirSyncs()
    results: list[outcome.Outcome[WriteOutcome]] = []
    for index, item in enumerate(items):
        syncs.current = index
        results.append(outcome.capture(_write_item, store, item, syncs))
    for shown, which, exc in sync_group_dirs(store.disk, syncs, store.unsynced_dirs):
        root = shown.rsplit("/", 2)[0]
        store.health.failed(root, exc)
        for index in which:
            hash = items[index][0]
            results[index] = outcome.Error(
                DiskError(
                    root,
                    exc.errno,
                    f"cannot store block {hash.hex()}: fsync of {shown} failed: "
                    f"{exc.strerror or exc}",
                )
            )
    return results


def _write_item(store: BlockStore, item: GroupItem, syncs: DirSyncs | None) -> WriteOutcome:
    hash, block, written_at_msec, verify = item
    if verify:
        # Before anything touches the disk: a peer never makes us store bytes that do
        # not match their name.
        decode_block(hash, block, max_size=store.max_block_size)
    return write_block_sync(store, hash, block, written_at_msec, syncs)


def write_block_sync(
    store: BlockStore,
    hash: Hash,
    block: DataBlock,
    written_at_msec: int,
    syncs: DirSyncs | None = None,
) -> WriteOutcome:
    """Durably store ``block`` unless an equal or better copy exists (module steps).

    Counted like the store's ``@counted`` methods: the new block's copies and bytes are
    told to the tally when the write went as its look saw. ``syncs``: the group it is
    part of (its directory's fsync is left to the group).
    """
    mtime_ns = written_at_msec * 1_000_000
    seen = store.stored.begin_seen(hash)
    effect: tuple[int, int] | None = None
    try:
        if seen is not None:
            done = _write_new(store, hash, block, mtime_ns, seen, syncs)
            if done is not None:
                outcome, effect = done
                return outcome
        return _write_over(store, hash, block, mtime_ns, syncs)
    finally:
        if seen is not None:
            close_seen(store.disk, seen)
        store.stored.end(hash, effect)


def _write_new(
    store: BlockStore,
    hash: Hash,
    block: DataBlock,
    mtime_ns: int,
    seen: list[SeenDir],
    syncs: DirSyncs | None,
) -> tuple[WriteOutcome, tuple[int, int] | None] | None:
    """Write ``block`` when the copies seen leave nothing to keep, verify or replace
    (None, nothing done, otherwise)."""
    by_root = {d.root: d for d in seen}
    aa, bb = subdir_names(hash)
    existing: list[Existing[str]] = []
    for root in store.layout.search_roots(hash):
        for header in store.order:
            st = by_root[root].stats[0 if header is BlockHeader.COMPRESSED else 1]
            if st is None:
                continue
            path = f"{root}/{aa}/{bb}/{block_name(hash, header)}"
            if is_regular(st.st_mode, path):
                existing.append(Existing(header, store.counts_for_nothing(root), path))
    if decide(block.header, existing).action is not Action.WRITE:
        return None  # a copy to keep, verify or replace
    attempts = 0

    def write(root: str) -> tuple[Placed, tuple[int, int] | None]:
        nonlocal attempts
        attempts += 1
        where = by_root[root]
        if where.fd is None and not where.missing:  # not a directory: place_copy says so
            return store.place_copy_sync(root, hash, block, mtime_ns, syncs=syncs), None
        stats: tuple[os.stat_result | None, ...] | None = where.stats
        if where.fd is None:
            # ``aa/bb`` was absent: made now (empty when made by this call).
            where.fd, created = store.disk.make_dir(root, f"{aa}/{bb}", fsync=store.fsync)
            if not created:
                stats = None  # made meanwhile by another write: look again
        return place_in(
            store.disk,
            where.fd,
            f"{root}/{aa}/{bb}",
            hash,
            block,
            mtime_ns,
            fsync=store.fsync,
            live=store.live_temps,
            seen=stats,
            unsynced=store.unsynced_dirs,
            syncs=syncs,
        )

    placed, effect = _into_a_dir(store, hash, write)
    # After a failed attempt the look is no longer the "before" of what is there.
    return _OUTCOMES[placed], effect if attempts == 1 else None


def _into_a_dir(
    store: BlockStore,
    hash: Hash,
    write: Callable[[str], T],
    avoid: tuple[str, OSError] | None = None,
) -> T:
    """``write(root)`` into the directory a new copy of ``hash`` goes to, and on an
    ``OSError`` into the next one (module docstring): the one "which directory"
    decision of the write path. ``avoid`` (a directory holding an unreadable copy,
    which a write there would keep, and its error) is not tried."""
    order = store.write_order(hash)
    tried: list[str] = [] if avoid is None else [avoid[0]]
    last: OSError | None = None if avoid is None else avoid[1]
    while (root := store.health.pick(order, tried)) is not None:
        try:
            result = write(root)
        except OSError as exc:
            store.health.failed(root, exc)
            tried.append(root)
            last = exc
            continue
        store.health.wrote(root)
        return result
    raise store.health.no_room(order, last, tried) from last


def _write_over(
    store: BlockStore, hash: Hash, block: DataBlock, mtime_ns: int, syncs: DirSyncs | None
) -> WriteOutcome:
    """Write ``block`` where a copy may exist: verify it, then keep or supersede it."""
    existing: list[Existing[BlockLocation]] = []
    unreadable: tuple[str, OSError] | None = None
    try:
        found = store.find_sync(hash)
    except DiskError:
        found = None  # no copy seen, a directory unreadable: one more copy, elsewhere
    if (
        found is not None
        and store.fsync
        and found.path_str.rsplit("/", 1)[0] in store.unsynced_dirs
    ):
        # Its directory's fsync failed: it may vanish at a power cut although it is
        # visible now. Never kept as this write's durable copy: written again.
        found = None
    if found is not None:
        root = found.path_str.rsplit("/", 3)[0]
        read_only = store.counts_for_nothing(root)
        # A put is a chance to heal: a corrupt copy is quarantined, not kept.
        valid: bool | None
        try:
            valid = read_only or store.verify_file_sync(found)
        except (FileNotFoundError, NotABlockFile):
            raise
        except OSError as exc:
            # Unreadable (EIO, say): it counts against its directory and is as if
            # absent; a fresh copy is written in another directory.
            store.health.failed(root, exc)
            unreadable, valid = (root, exc), None
        if valid:
            existing.append(Existing(found.header, read_only, found))
        elif valid is not None:
            store.quarantine_sync(found)
    decision = decide(block.header, existing)
    if decision.keep is not None:
        kept = decision.keep.copy
        if mtime_ns > kept.mtime_ns:
            with regular_at(store.disk, kept.path_str) as at:
                if at is not None:
                    refresh_mtime(store.disk, *at, mtime_ns)
        return WriteOutcome.KEPT
    placed = _into_a_dir(
        store,
        hash,
        lambda root: store.place_sync(root, hash, block, mtime_ns, syncs=syncs),
        unreadable,
    )
    if placed is Placed.KEPT:
        return WriteOutcome.KEPT
    for old in decision.remove:
        # A copy the new one supersedes (if not already gone with it).
        store.remove_copy_sync(old.copy.path_str)
    if decision.remove or placed is Placed.REPLACED:
        return WriteOutcome.REPLACED
    return WriteOutcome.WRITTEN


__all__ = ["GroupItem", "WriteOutcome", "write_block_sync", "write_group_sync"]
