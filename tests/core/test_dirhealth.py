"""The pure rules of data directory health (``_core.dirhealth``)."""

from __future__ import annotations

import errno

from hypothesis import given
from hypothesis import strategies as st

from trioblock._core.dirhealth import (
    FAILING_AFTER,
    PROBE_FIRST,
    PROBE_MAX,
    DataDirState,
    DirHealth,
    after_error,
    after_read,
    after_write,
    next_probe_delay,
    pick_dir,
)

STATES = st.sampled_from(list(DataDirState))
ERRNOS = st.sampled_from([errno.EIO, errno.EACCES, errno.ENOSPC, errno.EDQUOT, errno.EROFS])
ROOTS = [f"/d{i}" for i in range(5)]


@given(
    st.lists(STATES, min_size=5, max_size=5),
    st.sets(st.sampled_from(ROOTS)),
    st.sets(st.sampled_from(ROOTS)),
)
def test_pick_dir_prefers_the_first_ok_directory_and_never_a_failing_or_tried_one(
    states: list[DataDirState], tried: set[str], roomy: set[str]
) -> None:
    by_root = dict(zip(ROOTS, states, strict=True))
    picked = pick_dir(ROOTS, by_root, tried, lambda r: r in roomy)
    ok = [r for r in ROOTS if r not in tried and by_root[r] is DataDirState.OK]
    full = [r for r in ROOTS if r not in tried and by_root[r] is DataDirState.FULL and r in roomy]
    assert picked == (ok[0] if ok else full[0] if full else None)


@given(st.lists(ERRNOS, max_size=10))
def test_errors_in_a_row_make_a_directory_failing_and_no_space_makes_it_full(
    codes: list[int],
) -> None:
    h = DirHealth()
    other = 0
    for code in codes:
        h = after_error(h, code, "x")
        if code not in (errno.ENOSPC, errno.EDQUOT):
            other += 1
    if other >= FAILING_AFTER:
        assert h.state is DataDirState.FAILING
        assert h.probe_delay >= PROBE_FIRST
    elif codes and codes[-1] in (errno.ENOSPC, errno.EDQUOT):
        assert h.state is DataDirState.FULL
    assert h.errors == other
    assert after_write(h) == DirHealth()


@given(st.lists(ERRNOS, max_size=6))
def test_a_read_forgets_the_errors_of_an_ok_directory_only(codes: list[int]) -> None:
    h = DirHealth()
    for code in codes:
        h = after_error(h, code, "x")
    read = after_read(h)
    assert read.state is h.state
    assert read.errors == (0 if h.state is DataDirState.OK else h.errors)


@given(st.floats(min_value=0, max_value=10 * PROBE_MAX))
def test_the_probe_back_off_doubles_within_its_bounds(previous: float) -> None:
    delay = next_probe_delay(previous)
    assert PROBE_FIRST <= delay <= PROBE_MAX
    assert delay >= min(PROBE_MAX, previous)
