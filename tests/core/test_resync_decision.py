"""The pure resync decision (``_core/resync.py``), checked exhaustively."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trioblock import RcEntry
from trioblock._core.resync import ResyncAction, decide_resync, offload_allowed

NOW = 1_000_000
GC = 600_000

RCS = {
    "absent": RcEntry.absent(),
    "present1": RcEntry.present(1),
    "present5": RcEntry.present(5),
    "deletable-past": RcEntry.deletable(NOW - 1),
    "deletable-now": RcEntry.deletable(NOW),
    "deletable-future": RcEntry.deletable(NOW + 1),
}
WRITTEN = {
    "unknown": None,
    "long-ago": NOW - GC - 1,
    "exactly-gc-ago": NOW - GC,
    "recently": NOW - 1,
    "just-now": NOW,
}


def expected_action(exists: bool, rc: RcEntry, storage: bool, written: int | None) -> ResyncAction:
    """The rules of ``_core/resync.py``, restated independently."""
    deletable = rc.count == 0 and (rc.deletable_at is None or rc.deletable_at < NOW)
    if exists and deletable:
        if written is not None and NOW - written <= GC:
            return ResyncAction.DEFER
        return ResyncAction.OFFLOAD_AND_DELETE
    if rc.count > 0 and not exists:
        return ResyncAction.FETCH if storage else ResyncAction.NOTHING
    if not exists and deletable and rc.deletable_at is not None:
        return ResyncAction.CLEAR_RC
    return ResyncAction.NOTHING


CASES = list(itertools.product([True, False], RCS, [True, False], WRITTEN))


@pytest.mark.parametrize(("exists", "rc_name", "storage", "written_name"), CASES)
def test_decide_resync_follows_the_rules(
    exists: bool, rc_name: str, storage: bool, written_name: str
) -> None:
    rc, written = RCS[rc_name], WRITTEN[written_name]
    decision = decide_resync(
        exists=exists,
        rc=rc,
        now_msec=NOW,
        is_storage_node=storage,
        written_at_msec=written,
        gc_delay_msec=GC,
    )
    assert decision.action is expected_action(exists, rc, storage, written)
    assert decision.reason
    if decision.action is ResyncAction.DEFER:
        assert written is not None
        assert decision.retry_at == written + GC + 1
        assert decision.retry_at > NOW
    else:
        assert decision.retry_at is None


def test_every_action_is_reachable() -> None:
    seen = {
        decide_resync(
            exists=e,
            rc=RCS[r],
            now_msec=NOW,
            is_storage_node=s,
            written_at_msec=WRITTEN[w],
            gc_delay_msec=GC,
        ).action
        for e, r, s, w in CASES
    }
    assert seen == set(ResyncAction)


rcs = st.one_of(
    st.just(RcEntry.absent()),
    st.integers(1, 10).map(RcEntry.present),
    st.integers(0, 2 * NOW).map(RcEntry.deletable),
)


@given(
    exists=st.booleans(),
    rc=rcs,
    now=st.integers(0, 2 * NOW),
    storage=st.booleans(),
    written=st.none() | st.integers(0, 2 * NOW),
    gc=st.integers(0, GC),
)
def test_safety_properties(
    exists: bool, rc: RcEntry, now: int, storage: bool, written: int | None, gc: int
) -> None:
    d = decide_resync(
        exists=exists,
        rc=rc,
        now_msec=now,
        is_storage_node=storage,
        written_at_msec=written,
        gc_delay_msec=gc,
    )
    if d.action is ResyncAction.OFFLOAD_AND_DELETE:
        # Never delete a needed block, nor one written less than gc_delay ago.
        assert exists and rc.is_deletable(now)
        assert written is None or written + gc < now
    if d.action is ResyncAction.FETCH:
        assert not exists and rc.count > 0 and storage
    if d.action is ResyncAction.CLEAR_RC:
        assert not exists and rc.count == 0 and rc.deletable_at is not None
        assert now > rc.deletable_at
    if d.action is ResyncAction.DEFER:
        assert d.retry_at is not None and d.retry_at > now


def test_offload_needs_a_write_quorum_of_storage_nodes() -> None:
    assert offload_allowed(3, 2)
    assert offload_allowed(2, 2)
    assert not offload_allowed(1, 2)
    assert offload_allowed(1, 1)
