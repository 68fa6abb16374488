"""How many block copies, and how many bytes, a node's data directories hold.

:class:`StoredTally` keeps the two figures without walking anything when asked: it
holds a count per ``aa/bb`` subdirectory (65,536 of them, summed over every data
directory) and running totals.

Rules kept here:

- A copy is a regular file named like a block of its ``aa/bb`` (``<hash>`` or
  ``<hash>.zst``), in any data directory, read-only ones included; its size is the
  file's. Temp files, quarantined ``.corrupted`` files and anything else do not count.
  A block held in two directories (a rebalance in progress) counts twice.
- Every method of the block store that can make a copy appear or vanish is wrapped with
  :func:`counted` (place, quarantine, detach, remove) or calls :meth:`StoredTally.begin`
  and :meth:`StoredTally.end` itself (write). The block's copies are looked at (``lstat``,
  never following a link) before the change and after it and the difference is added.
  Changes of one block that overlap (nested calls, or two threads) form one group: the
  first takes the "before" look, the last the "after" one, so no change is counted twice
  or missed, whatever the order in which they finish.
- A change alone in its group may instead tell :meth:`StoredTally.end` what it did, as
  it observed it on the "before" look it was handed (:meth:`StoredTally.begin_seen`: the
  ``aa/bb`` descriptor and both names' ``lstat``); a write of a new block does, so it
  looks once, not twice. When another change joined the group, the look decides.
- The figures start at zero when the node opens and follow those changes; the background
  :meth:`StoredTally.rebuild` (run once at start, after the stale temp sweep) then lists
  each subdirectory and replaces its count with what it found. A listing only counts
  if no change of a block in that subdirectory started or ended while it ran (a
  generation number per subdirectory and a count of changes in flight); otherwise the
  subdirectory is listed again. Once every subdirectory has been listed the figures are
  exact (``exact`` is True) and stay so; before that they are an estimate.
- A look that fails (an unreadable directory) leaves its subdirectory unknown: the
  figures are then reported as an estimate until the next rebuild (the next start).
- Bookkeeping happens under one ``threading.Lock``, held by a thread only for the few
  ``lstat`` calls of one look (the "before" look of a group and its "after" look).

The store's methods run in worker threads, except ``detach_now`` on the Trio thread;
:meth:`StoredTally.rebuild` does its listing in worker threads, a few thousand directory
entries per trip (the generations are read and the listings taken in the same trip, so
the rebuild costs the Trio thread next to nothing).
"""

from __future__ import annotations

import functools
import logging
import os
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

import trio

from .._core.block import BlockHeader
from .._core.datalayout import DataLayout
from .._core.disk import Disk, Handle, NotASubdir
from .._core.hashing import Hash
from .paths import BLOCK_NAME_RE, block_name, split_block_path, subdir_names
from .subdirlist import list_subdirs
from .threads import run_blocking

log = logging.getLogger("trioblock.storage")

N_SUBDIRS = 1 << 16
_HEADERS = (BlockHeader.COMPRESSED, BlockHeader.PLAIN)
#: Pause between two rounds of re-listing subdirectories busy with changes.
RETRY_PAUSE = 0.05
#: Directory entries looked at per worker-thread trip of the rebuild (whole ``bb``
#: subdirectories are listed until a trip has seen this many; absent ``aa`` and ``bb``
#: directories cost next to nothing, so an empty store is counted in one trip).
FILES_PER_TRIP = 4096


@dataclass(frozen=True)
class StoredBlocks:
    """What a node's data directories hold (``BlockManager.stored``).

    ``blocks``: block copies (regular files named like a block; a block held in two
    data directories counts twice); ``bytes``: their size on disk (compressed size for
    compressed copies). ``exact``: True once the count made at start-up has gone
    through every directory, False while it runs (the figures are then an estimate:
    the changes since the node opened plus what the count has seen so far) or when a
    directory could not be read.
    """

    blocks: int
    bytes: int
    exact: bool


def _key(hash: bytes) -> int:
    return (hash[0] << 8) | hash[1]


class _Group:
    """Overlapping changes of one block: the counts before the first began."""

    __slots__ = ("before", "joined", "members")

    def __init__(self, before: tuple[int, int] | None) -> None:
        self.members = 1
        self.joined = False  # another change joined the first one
        self.before = before


class SeenDir:
    """What a "before" look saw of a block in one data directory: the descriptor of its
    ``aa/bb`` (None when that is absent or not a directory: ``missing`` tells which) and
    the ``lstat`` of each name (``.zst`` first, then plain; None when absent)."""

    __slots__ = ("fd", "missing", "root", "stats")

    def __init__(
        self,
        root: str,
        fd: Handle | None,
        stats: tuple[os.stat_result | None, ...],
        *,
        missing: bool = False,
    ) -> None:
        self.root = root
        self.fd = fd
        self.stats = stats
        self.missing = missing


def close_seen(disk: Disk, seen: list[SeenDir]) -> None:
    """Close the descriptors a look handed over (:meth:`StoredTally.begin_seen`)."""
    for d in seen:
        if d.fd is not None:
            disk.close(d.fd)
            d.fd = None


class StoredTally:
    """Per-subdirectory counts of block copies and bytes (see the module rules)."""

    def __init__(self, layout: DataLayout, disk: Disk) -> None:
        self._roots = [str(d) for d in layout.dirs]
        self._disk = disk
        self._lock = threading.Lock()
        self._blocks = [0] * N_SUBDIRS
        self._bytes = [0] * N_SUBDIRS
        self._gen = [0] * N_SUBDIRS
        self._busy = [0] * N_SUBDIRS  # groups in flight per subdirectory
        self._listed = bytearray(N_SUBDIRS)  # 1 once a listing set the subdirectory's count
        self._n_listed = 0
        self._unknown: set[int] = set()  # subdirectories a look or listing could not read
        self._groups: dict[bytes, _Group] = {}
        self.total_blocks = 0
        self.total_bytes = 0
        self.rebuilds = 0

    # -- the figures -------------------------------------------------------------------

    def figures(self) -> StoredBlocks:
        """The running totals (constant time)."""
        with self._lock:
            exact = self._n_listed == N_SUBDIRS and not self._unknown
            return StoredBlocks(self.total_blocks, self.total_bytes, exact)

    # -- changes -----------------------------------------------------------------------

    def look_sync(self, hash: bytes) -> tuple[int, int] | None:
        """Copies of ``hash`` and their bytes in every data directory; None if unreadable."""
        counts, _seen = self._look(hash, keep=False)
        return counts

    def _look(self, hash: bytes, *, keep: bool) -> tuple[tuple[int, int] | None, list[SeenDir]]:
        """The counts, and with ``keep`` what was seen in each data directory (its
        ``aa/bb`` descriptor left open); nothing kept when a directory was unreadable."""
        aa, bb = subdir_names(hash)
        names = [block_name(hash, header) for header in _HEADERS]
        blocks = size = 0
        seen: list[SeenDir] = []
        disk = self._disk
        for root in self._roots:
            try:
                fd = disk.open_dir(root, f"{aa}/{bb}")
            except (FileNotFoundError, NotASubdir) as exc:
                if keep:
                    missing = isinstance(exc, FileNotFoundError)
                    seen.append(SeenDir(root, None, (None, None), missing=missing))
                continue
            except OSError:
                close_seen(disk, seen)
                return None, []
            try:
                stats = tuple(disk.lstat_at(fd, name) for name in names)
            except OSError:
                disk.close(fd)
                close_seen(disk, seen)
                return None, []
            for st in stats:
                if st is not None and stat.S_ISREG(st.st_mode):
                    blocks += 1
                    size += st.st_size
            if keep:
                seen.append(SeenDir(root, fd, stats))
            else:
                disk.close(fd)
        return (blocks, size), seen

    def begin(self, hash: bytes) -> None:
        """A change of ``hash``'s copies is about to start (looks first if it is alone)."""
        self._begin(bytes(hash), keep=False)

    def begin_seen(self, hash: bytes) -> list[SeenDir] | None:
        """:meth:`begin`, returning what the "before" look saw in each data directory
        when this change is the first of its group (None when it joins one, or when a
        directory could not be read). The caller closes the descriptors
        (:func:`close_seen`) and may tell :meth:`end` what its change did."""
        return self._begin(bytes(hash), keep=True)

    def _begin(self, key: bytes, *, keep: bool) -> list[SeenDir] | None:
        with self._lock:
            group = self._groups.get(key)
            if group is not None:
                group.members += 1
                group.joined = True
                return None
            counts, seen = self._look(key, keep=keep)
            self._groups[key] = _Group(counts)
            self._busy[_key(key)] += 1
            return seen if counts is not None and keep else None

    def end(self, hash: bytes, effect: tuple[int, int] | None = None) -> None:
        """The change started by :meth:`begin` is over (the last one of a group counts).

        ``effect``: the copies and bytes the change added (negative: removed), as the
        change itself observed them; taken instead of an "after" look when no other
        change of the block overlapped it (otherwise, or without it, the look decides).
        """
        key = bytes(hash)
        sub = _key(key)
        with self._lock:
            group = self._groups[key]
            group.members -= 1
            if group.members:
                return
            del self._groups[key]
            self._busy[sub] -= 1
            self._gen[sub] += 1
            if group.before is None:
                self._unknown.add(sub)
                return
            if effect is not None and not group.joined:
                self._add(sub, effect[0], effect[1])
                return
            after = self.look_sync(key)
            if after is None:
                self._unknown.add(sub)
                return
            self._add(sub, after[0] - group.before[0], after[1] - group.before[1])

    def _add(self, sub: int, blocks: int, size: int) -> None:
        self._blocks[sub] += blocks
        self._bytes[sub] += size
        self.total_blocks += blocks
        self.total_bytes += size

    # -- the rebuild -------------------------------------------------------------------

    def list_range_sync(
        self, lo: int, hi: int, budget: int
    ) -> tuple[int, dict[int, tuple[int, int]], set[int], int]:
        """:func:`~.subdirlist.list_subdirs` of every data directory."""
        return list_subdirs(self._disk, self._roots, lo, hi, budget)

    def _list_and_settle(self, lo: int, hi: int, budget: int) -> tuple[int, list[int], int]:
        """Snapshot the generations of ``lo <= sub < hi`` (one ``aa``), list them (up to
        ``budget`` entries) and take each listing nothing changed meanwhile:
        ``(end, subdirectories to list again, entries seen)``."""
        with self._lock:
            gens = self._gen[lo:hi]
            busy = self._busy[lo:hi]
        end, found, unreadable, seen = self.list_range_sync(lo, hi, budget)
        return end, self._settle(lo, end, gens, busy, found, unreadable), seen

    def _settle(
        self,
        lo: int,
        hi: int,
        gens: list[int],
        busy: list[int],
        found: dict[int, tuple[int, int]],
        unreadable: set[int],
    ) -> list[int]:
        """Take the listing of each subdirectory ``lo <= sub < hi`` that no change
        started or ended in since ``gens``/``busy`` were read; return the others."""
        n = hi - lo
        retry: list[int] = []
        with self._lock:
            if any(busy[:n]) or any(self._busy[lo:hi]) or self._gen[lo:hi] != gens[:n]:
                take = []
                for i in range(n):
                    if busy[i] or self._busy[lo + i] or self._gen[lo + i] != gens[i]:
                        retry.append(lo + i)
                    else:
                        take.append(lo + i)
            else:
                take = list(range(lo, hi))  # the common case: nothing changed
            wanted = set(take)
            for sub in unreadable & wanted:
                self._unknown.add(sub)
                wanted.discard(sub)
            if self._unknown:
                self._unknown.difference_update(wanted)
            if any(self._blocks[lo:hi]) or any(self._bytes[lo:hi]):
                changed = wanted
            else:
                changed = wanted.intersection(found)
            for sub in changed:
                blocks, size = found.get(sub, (0, 0))
                self._add(sub, blocks - self._blocks[sub], size - self._bytes[sub])
            for sub in wanted:
                if not self._listed[sub]:
                    self._listed[sub] = 1
                    self._n_listed += 1
        return retry

    def rebuild_trip_sync(self, start: int, budget: int) -> tuple[int, list[int]]:
        """One worker-thread trip of the rebuild: list subdirectories from ``start`` on
        until ``budget`` entries have been seen (absent ``aa`` and ``bb`` cost one failed
        open, or nothing): ``(next start, subdirectories to list again)``."""
        retry: list[int] = []
        seen = 0
        sub = start
        while sub < N_SUBDIRS and seen < budget:
            sub, again, n = self._list_and_settle(sub, ((sub >> 8) + 1) << 8, budget - seen)
            retry.extend(again)
            seen += n
        return sub, retry

    def relist_trip_sync(self, subs: list[int], budget: int) -> tuple[list[int], list[int]]:
        """List ``subs`` again one by one until ``budget`` entries have been seen:
        ``(those left for another trip, those to list again)``."""
        retry: list[int] = []
        seen = 0
        for i, sub in enumerate(subs):
            if seen >= budget:
                return subs[i:], retry
            _end, again, n = self._list_and_settle(sub, sub + 1, 1 << 62)
            retry.extend(again)
            seen += n
        return [], retry

    async def rebuild(self, limiter: trio.CapacityLimiter) -> StoredBlocks:
        """List every subdirectory (in worker threads, about :data:`FILES_PER_TRIP`
        entries per trip) and set the counts from it.

        Safe to cancel between two trips (the figures stay an estimate then).
        """
        pending: list[int] = []
        start = 0
        while start < N_SUBDIRS:
            start, retry = await run_blocking(
                self.rebuild_trip_sync, start, FILES_PER_TRIP, limiter=limiter
            )
            pending.extend(retry)
        while pending:
            await trio.sleep(RETRY_PAUSE)
            left, pending = pending, []
            while left:
                left, retry = await run_blocking(
                    self.relist_trip_sync, left, FILES_PER_TRIP, limiter=limiter
                )
                pending.extend(retry)
        self.rebuilds += 1
        figures = self.figures()
        if self._unknown:
            log.warning(
                "stored blocks: %d subdirectories could not be read; the count is an estimate",
                len(self._unknown),
            )
        log.info("stored blocks counted: %d copies, %d bytes", figures.blocks, figures.bytes)
        return figures


# ---------------------------------------------------------------------------------------
# The wrapper of the store's methods


class _HasTally(Protocol):
    stored: StoredTally


S = TypeVar("S", bound=_HasTally)
P = ParamSpec("P")
R = TypeVar("R")


#: Finds the block a call changes from its arguments (after ``self``).
Which = Callable[[tuple[Any, ...], dict[str, Any]], bytes | None]


def _arg(args: tuple[Any, ...], kwargs: dict[str, Any], index: int, name: str) -> Any:
    return args[index] if len(args) > index else kwargs.get(name)


def hash_arg(index: int, name: str = "hash") -> Which:
    """The block of a call: its argument ``index`` (or keyword ``name``), a hash."""
    return lambda args, kwargs: _arg(args, kwargs, index, name)


def loc_arg(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes | None:
    """The block of a call whose first argument (``loc``) is a ``BlockLocation``."""
    loc = _arg(args, kwargs, 0, "loc")
    return None if loc is None else loc.hash


def path_arg(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes | None:
    """The block of a call whose first argument (``path``) is a copy's path, or None."""
    path = _arg(args, kwargs, 0, "path")
    if path is None:
        return None
    try:
        name = split_block_path(str(path))[3]
    except ValueError:
        return None
    m = BLOCK_NAME_RE.match(name)
    return None if m is None else Hash(bytes.fromhex(m.group(1)))


def counted(
    which: Which,
) -> Callable[[Callable[Concatenate[S, P], R]], Callable[Concatenate[S, P], R]]:
    """Count the copies a store method makes appear or vanish (``which`` names the block
    from the positional arguments after ``self``)."""

    def wrap(method: Callable[Concatenate[S, P], R]) -> Callable[Concatenate[S, P], R]:
        @functools.wraps(method)
        def wrapper(self: S, /, *args: P.args, **kwargs: P.kwargs) -> R:
            hash = which(args, kwargs)
            if hash is None:
                return method(self, *args, **kwargs)
            tally = self.stored
            tally.begin(hash)
            try:
                return method(self, *args, **kwargs)
            finally:
                tally.end(hash)

        return wrapper

    return wrap


__all__ = [
    "SeenDir",
    "StoredBlocks",
    "StoredTally",
    "Which",
    "close_seen",
    "counted",
    "hash_arg",
    "loc_arg",
    "path_arg",
]
