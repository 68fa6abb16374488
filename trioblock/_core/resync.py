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

from .refcount import RcEntry


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
