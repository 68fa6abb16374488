"""The reference CRDT: merge is a join, counts flip exactly on alive changes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trioblock._core.refcrdt import (
    LEAF_ENTRIES,
    RefState,
    children,
    digest_of,
    is_alive,
    merge,
    missing_or_older,
    owner_bytes,
    plan_descent,
    prefix_bounds,
    rc_delta,
)

states = st.builds(RefState, st.booleans(), st.integers(0, 2**63 - 1))


@given(states, states)
def test_merge_commutes(a: RefState, b: RefState) -> None:
    assert merge(a, b) == merge(b, a)


@given(states, states, states)
def test_merge_associates(a: RefState, b: RefState, c: RefState) -> None:
    assert merge(merge(a, b), c) == merge(a, merge(b, c))


@given(states, states)
def test_merge_is_idempotent_and_absorbing(a: RefState, b: RefState) -> None:
    assert merge(a, a) == a
    assert merge(merge(a, b), b) == merge(a, b)
    assert merge(None, a) == a


@given(states, st.integers(0, 2**63 - 1))
def test_deleted_wins_whatever_the_timestamps(a: RefState, ts: int) -> None:
    tomb = RefState(True, ts)
    assert merge(a, tomb).deleted
    assert merge(tomb, a).deleted


@given(st.lists(states, max_size=12), st.randoms())
def test_any_delivery_order_gives_the_same_state_and_count(updates, rnd) -> None:
    """Replaying updates in any order, with duplicates, ends in one state, and the sum
    of the count changes along the way equals whether that state is alive."""
    shuffled = list(updates) + list(updates[: len(updates) // 2])
    rnd.shuffle(shuffled)
    results = []
    for order in (updates, shuffled):
        state: RefState | None = None
        count = 0
        for update in order:
            new = merge(state, update)
            count += rc_delta(state, new)
            state = new
        assert count == int(is_alive(state))
        results.append(state)
    assert results[0] == results[1]


def test_state_encoding_round_trips_and_orders_like_the_merge() -> None:
    for s in (RefState(False, 0), RefState(False, 5), RefState(True, 1), RefState(True, 2**62)):
        assert RefState.decode(s.encode()) == s
    assert RefState(False, 2**62).encode() < RefState(True, 0).encode()
    with pytest.raises(ValueError):
        RefState.decode(b"\x02" + bytes(8))
    with pytest.raises(ValueError):
        RefState.decode(b"\x00")


def test_owner_rules() -> None:
    assert owner_bytes("x") == owner_bytes(b"x") == b"x"
    assert owner_bytes("é") == "é".encode()
    assert owner_bytes(bytearray(b"ab")) == b"ab"
    assert owner_bytes(b"o" * 128) == b"o" * 128
    for bad in (b"", "", b"o" * 129, "é" * 65):
        with pytest.raises(ValueError):
            owner_bytes(bad)
    for bad in (1, None, 1.5, ["x"]):
        with pytest.raises(TypeError):
            owner_bytes(bad)


@given(st.binary(max_size=4), st.binary(min_size=33, max_size=40))
def test_prefix_bounds_hold_exactly_the_prefixed_keys(prefix: bytes, key: bytes) -> None:
    lo, hi = prefix_bounds(prefix)
    inside = lo <= key and (hi is None or key < hi)
    assert inside == key.startswith(prefix)


def test_children_and_descent() -> None:
    assert children(b"\x01")[:2] == [b"\x01\x00", b"\x01\x01"]
    assert len(children(b"")) == 256
    same = (3, b"d" * 32)
    small = (LEAF_ENTRIES, b"e" * 32)
    big = (LEAF_ENTRIES + 1, b"f" * 32)
    leaves, split = plan_descent(
        [b"a", b"b", b"c", b"\x00" * 4],
        [same, small, big, big],
        [same, same, same, same],
    )
    assert leaves == [b"b", b"\x00" * 4] and split == [b"c"]


def test_digest_depends_on_every_entry() -> None:
    entries = [(bytes(32) + b"o", RefState(False, 1).encode())]
    assert digest_of(entries) != digest_of([(bytes(32) + b"o", RefState(True, 1).encode())])
    assert digest_of(entries)[0] == 1
    assert digest_of([]) == digest_of([])


def test_missing_or_older_lists_what_the_other_side_needs() -> None:
    mine = {b"a": RefState(False, 1), b"b": RefState(True, 2), b"c": RefState(False, 3)}
    theirs = {b"a": RefState(False, 1), b"b": RefState(False, 9), b"d": RefState(False, 1)}
    assert missing_or_older(mine, theirs) == [b"b", b"c"]
