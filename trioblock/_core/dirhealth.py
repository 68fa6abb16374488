"""The health of a node's data directories: ok, full or failing (pure decisions).

Rules kept here:

- A directory is **ok**, **full** or **failing**. Only an ok directory takes new
  blocks; reads try every directory whatever its state.
- A write, fsync or create that fails with ``ENOSPC`` (or ``EDQUOT``) marks the
  directory **full**. Any other failed operation (a write, fsync, create or rename, or
  a read or lookup of a copy: ``EIO``, ``EACCES``...) counts one error; after
  :data:`FAILING_AFTER` errors in a row with no successful write between them, the
  directory is **failing**. A successful write returns a directory to ok and forgets
  its errors; a successful read forgets the errors of an ok directory (one unreadable
  copy among good ones does not make a directory failing) but changes no state.
- Which directory a new block goes to (:func:`pick_dir`): the first ok directory in the
  block's order (its primary first); if there is none, the first full one that has room
  again (free space at least the margin); else none: this node cannot take the block.
- A full directory is ok again once its free space is at least the margin (looked at
  periodically, and at once after a deletion in it); a failing one once a probe write
  and fsync succeed, tried after a back-off (:func:`next_probe_delay`) that doubles
  from :data:`PROBE_FIRST` to :data:`PROBE_MAX` seconds; or when the operator clears it.
"""

from __future__ import annotations

import enum
import errno
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace

#: Errors in a row (no successful write between them) that make a directory failing.
FAILING_AFTER = 3
#: Seconds before the first probe of a failing directory; doubled after each failed
#: probe up to :data:`PROBE_MAX`. Also how often full directories are looked at.
PROBE_FIRST = 10.0
PROBE_MAX = 600.0
#: The errno values meaning "no space left" (the directory is full, not failing).
NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})


class DataDirState(enum.Enum):
    """The health of a data directory: whether it takes new blocks.

    ``OK``: it does. ``FULL``: its filesystem ran out of space; new blocks go to the
    node's other directories until space is freed. ``FAILING``: its disk keeps failing
    (``EIO``, ``EACCES``...); new blocks go elsewhere until a probe write succeeds or
    the operator clears it. Reads try every directory whatever its state.
    """

    OK = "ok"
    FULL = "full"
    FAILING = "failing"


@dataclass(frozen=True, slots=True)
class DirHealth:
    """One directory's state, its errors in a row, and the last error seen."""

    state: DataDirState = DataDirState.OK
    errors: int = 0
    last_error: str | None = None
    #: seconds between two probes while failing (0 when not failing)
    probe_delay: float = 0.0


def after_write(h: DirHealth) -> DirHealth:
    """A write (or a probe) in the directory succeeded."""
    return DirHealth()


def after_read(h: DirHealth) -> DirHealth:
    """A read in the directory succeeded."""
    return replace(h, errors=0) if h.state is DataDirState.OK else h


def after_error(h: DirHealth, code: int | None, what: str) -> DirHealth:
    """An operation in the directory failed with ``code`` (``what`` says how)."""
    if code in NO_SPACE:
        if h.state is DataDirState.FAILING:
            return replace(h, last_error=what)
        return replace(h, state=DataDirState.FULL, last_error=what)
    errors = h.errors + 1
    if h.state is DataDirState.FAILING or errors >= FAILING_AFTER:
        delay = h.probe_delay or PROBE_FIRST
        return DirHealth(DataDirState.FAILING, errors, what, delay)
    return replace(h, errors=errors, last_error=what)


def after_failed_probe(h: DirHealth, what: str) -> DirHealth:
    """A probe of a failing directory failed: wait longer before the next."""
    return replace(h, last_error=what, probe_delay=next_probe_delay(h.probe_delay))


def next_probe_delay(previous: float) -> float:
    """The back-off after a probe that failed ``previous`` seconds after the last one."""
    return min(PROBE_MAX, max(PROBE_FIRST, previous * 2))


def pick_dir(
    order: Sequence[str],
    states: Mapping[str, DataDirState],
    tried: Collection[str],
    has_room: Callable[[str], bool],
) -> str | None:
    """The directory a new block goes to (module rules), or None when none takes it.

    ``order``: the writable directories in the block's order (its primary first);
    ``tried``: those that already failed this write; ``has_room``: whether a full one
    has room again (asked only when no ok directory is left).
    """
    for root in order:
        if root not in tried and states[root] is DataDirState.OK:
            return root
    for root in order:
        if root not in tried and states[root] is DataDirState.FULL and has_room(root):
            return root
    return None


__all__ = [
    "FAILING_AFTER",
    "NO_SPACE",
    "PROBE_FIRST",
    "PROBE_MAX",
    "DataDirState",
    "DirHealth",
    "after_error",
    "after_failed_probe",
    "after_read",
    "after_write",
    "next_probe_delay",
    "pick_dir",
]
