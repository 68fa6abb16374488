"""What the resync worker should do with one block: a pure decision.

Inputs are facts gathered under the block's lock: does a readable copy exist here, what
is its reference count, what time is it, is this node one of the block's storage nodes,
and when was the local copy last written. The rules, in order:

1. A copy exists and the block is deletable (Absent, or Deletable past its time):
   - if the copy was written less than ``gc_delay`` ago, wait until it is that old
     (a block just put is protected while the application takes its reference);
   - otherwise offload it to storage nodes that need it, then delete it.
2. The count is non-zero and there is no copy: fetch it from peers, if this node is one
   of the block's storage nodes; otherwise there is nothing to do.
3. No copy, and a Deletable row whose time has passed: drop the row (garbage).
4. Anything else is in order: nothing to do.

The node layer performs the action and re-checks the facts under the lock before it
destroys anything.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .config import MAX_RESYNC_WORKERS
from .rcentry import RcEntry


class ResyncAction(enum.Enum):
    NOTHING = "nothing"
    OFFLOAD_AND_DELETE = "offload-and-delete"
    FETCH = "fetch"
    CLEAR_RC = "clear-rc"
    DEFER = "defer"


@dataclass(frozen=True, slots=True)
class ResyncDecision:
    action: ResyncAction
    reason: str
    #: For DEFER: when (msec) to look at the block again.
    retry_at: int | None = None


def decide_resync(
    *,
    exists: bool,
    rc: RcEntry,
    now_msec: int,
    is_storage_node: bool,
    written_at_msec: int | None = None,
    gc_delay_msec: int = 0,
) -> ResyncDecision:
    """Decide the resync action for one block; see the module docstring for the rules."""
    deletable = rc.is_deletable(now_msec)
    if exists and deletable:
        if written_at_msec is not None:
            protected_until = written_at_msec + gc_delay_msec
            if protected_until >= now_msec:
                return ResyncDecision(
                    ResyncAction.DEFER,
                    "unreferenced copy written recently; waiting out the GC delay",
                    retry_at=protected_until + 1,
                )
        return ResyncDecision(ResyncAction.OFFLOAD_AND_DELETE, f"copy present, rc {rc}")
    if rc.is_nonzero and not exists:
        if is_storage_node:
            return ResyncDecision(ResyncAction.FETCH, f"rc {rc} but no local copy")
        return ResyncDecision(ResyncAction.NOTHING, "needed elsewhere; not a storage node here")
    if not exists and deletable and rc.deletable_at is not None:
        return ResyncDecision(ResyncAction.CLEAR_RC, "no copy and GC delay passed")
    return ResyncDecision(ResyncAction.NOTHING, f"in order (copy={exists}, rc {rc})")


def offload_allowed(known_storage_nodes: int, write_quorum: int) -> bool:
    """Deleting after offload needs at least a write quorum of known storage nodes."""
    return known_storage_nodes >= write_quorum


# -- how many resync workers, and whether they throttle ----------------------------------------
#
# The operator's worker count (``set_resync_workers``) is a floor: that many workers always
# run. While due entries wait longer than ``GROW_OVERDUE_MSEC`` behind the running workers,
# the pool adds one more (at most one per ``GROW_INTERVAL_MSEC``) up to
# ``MAX_RESYNC_WORKERS``; a worker above the floor leaves once it has found nothing due for
# ``SHRINK_IDLE_MSEC`` (the highest-numbered one first, so the numbers stay 0..n-1).
#
# Tranquility trades background I/O for latency: after each step a worker sleeps
# ``tranquility × the mean step time``. An entry overdue by more than
# ``CATCH_UP_OVERDUE_MSEC`` means the node is falling behind for good, and then the step is
# not followed by a sleep until the backlog is back under that bound.

#: A due entry waiting this long (msec) for a worker means the running ones are behind.
GROW_OVERDUE_MSEC = 1_000
#: At most one worker is added per this long (msec).
GROW_INTERVAL_MSEC = 500
#: A worker above the floor leaves after finding nothing due for this long (msec).
SHRINK_IDLE_MSEC = 10_000
#: Past this lateness (msec), a step is not throttled by tranquility.
CATCH_UP_OVERDUE_MSEC = 30_000


def should_grow(*, active: int, overdue_msec: int, since_grown_msec: int | None) -> bool:
    """Whether the pool adds a worker: another entry waits ``overdue_msec`` past its time
    while ``active`` workers run, the last one added ``since_grown_msec`` ago (None:
    never)."""
    if active >= MAX_RESYNC_WORKERS or overdue_msec < GROW_OVERDUE_MSEC:
        return False
    return since_grown_msec is None or since_grown_msec >= GROW_INTERVAL_MSEC


def should_shrink(*, index: int, active: int, floor: int, idle_msec: int) -> bool:
    """Whether worker ``index`` (of ``active``; ``floor`` always run) leaves after
    finding nothing due for ``idle_msec``: only the highest-numbered one above the floor."""
    return index == active - 1 and index >= floor and idle_msec >= SHRINK_IDLE_MSEC


def throttled(overdue_msec: int) -> bool:
    """Whether a step on an entry ``overdue_msec`` late is followed by tranquility's sleep."""
    return overdue_msec <= CATCH_UP_OVERDUE_MSEC
