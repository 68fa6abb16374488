"""``RcEntry``, ``ErrorCounter`` and queue keys: transitions and exact byte encodings."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trioblock import RcEntry
from trioblock._core.rcentry import ErrorCounter, parse_queue_key, queue_key

U64 = st.integers(min_value=0, max_value=2**64 - 1)
COUNT = st.integers(min_value=1, max_value=2**64 - 1)
MSEC = st.integers(min_value=0, max_value=2**62)

entries = st.one_of(
    st.just(RcEntry.absent()),
    COUNT.map(RcEntry.present),
    MSEC.map(RcEntry.deletable),
)


def be64(n: int) -> bytes:
    return struct.pack(">Q", n)


# -- encodings --------------------------------------------------------------------------


@given(COUNT)
def test_present_encodes_as_be64_count(n: int) -> None:
    assert RcEntry.present(n).encode() == be64(n)


@given(MSEC)
def test_deletable_encodes_as_be64_zero_then_be64_time(at: int) -> None:
    assert RcEntry.deletable(at).encode() == be64(0) + be64(at)


def test_absent_encodes_as_no_row() -> None:
    assert RcEntry.absent().encode() is None
    assert RcEntry.decode(None) == RcEntry.absent()


@given(entries)
def test_rc_entry_round_trips(entry: RcEntry) -> None:
    assert RcEntry.decode(entry.encode()) == entry


def test_decode_rejects_zero_count_without_time() -> None:
    with pytest.raises(ValueError):
        RcEntry.decode(be64(0))


@given(COUNT, U64)
def test_decode_rejects_deletion_time_with_nonzero_count(count: int, at: int) -> None:
    with pytest.raises(ValueError):
        RcEntry.decode(be64(count) + be64(at))


@given(st.binary(max_size=40).filter(lambda b: len(b) not in (8, 16)))
def test_decode_rejects_other_lengths(raw: bytes) -> None:
    with pytest.raises(ValueError):
        RcEntry.decode(raw)


def test_invalid_entries_cannot_be_built() -> None:
    with pytest.raises(ValueError):
        RcEntry(-1)
    with pytest.raises(ValueError):
        RcEntry(2, 1000)
    with pytest.raises(ValueError):
        RcEntry.present(0)


def test_str_names_the_state() -> None:
    assert str(RcEntry.absent()) == "Absent"
    assert str(RcEntry.present(3)) == "Present(3)"
    assert str(RcEntry.deletable(5)) == "Deletable(at=5)"


# -- transitions ------------------------------------------------------------------------


@given(entries)
def test_incref_from_any_state_is_present_n_plus_1(entry: RcEntry) -> None:
    assert entry.incref() == RcEntry.present(entry.count + 1)


@given(MSEC, st.integers(min_value=0, max_value=10**9))
def test_decref_of_one_becomes_deletable_after_gc_delay(now: int, gc: int) -> None:
    assert RcEntry.present(1).decref(now, gc) == RcEntry.deletable(now + gc)


@given(st.integers(min_value=2, max_value=2**40), MSEC)
def test_decref_of_more_than_one_decrements(n: int, now: int) -> None:
    assert RcEntry.present(n).decref(now, 1000) == RcEntry.present(n - 1)


@given(st.one_of(st.just(RcEntry.absent()), MSEC.map(RcEntry.deletable)), MSEC)
def test_decref_of_unreferenced_is_unchanged(entry: RcEntry, now: int) -> None:
    assert entry.decref(now, 1000) == entry


def test_deletable_and_needed_predicates() -> None:
    assert RcEntry.absent().is_deletable(0)
    assert RcEntry.absent().is_absent
    present = RcEntry.present(1)
    assert present.is_nonzero
    assert not present.is_deletable(2**62)
    pending = RcEntry.deletable(1000)
    assert not pending.is_absent and not pending.is_nonzero
    assert not pending.is_deletable(999)
    assert not pending.is_deletable(1000)  # "now > at" is strict
    assert pending.is_deletable(1001)


ops = st.lists(
    st.tuples(st.sampled_from(["incref", "decref"]), st.integers(min_value=0, max_value=5000)),
    max_size=40,
)


@given(ops, st.integers(min_value=0, max_value=10_000))
def test_incref_decref_sequences_follow_a_counter_model(
    seq: list[tuple[str, int]], gc: int
) -> None:
    entry = RcEntry.absent()
    count = 0
    deletable_at: int | None = None
    now = 0
    for op, step in seq:
        now += step
        if op == "incref":
            entry = entry.incref()
            count += 1
            deletable_at = None
        else:
            entry = entry.decref(now, gc)
            if count == 1:
                deletable_at = now + gc
            count = max(0, count - 1)
        assert entry.count == count
        assert entry.deletable_at == (deletable_at if count == 0 else None)
        assert RcEntry.decode(entry.encode()) == entry


# -- error counter ----------------------------------------------------------------------


@given(COUNT, MSEC)
def test_error_counter_encodes_as_be64_errors_then_be64_last_try(n: int, last: int) -> None:
    counter = ErrorCounter(n, last)
    assert counter.encode() == be64(n) + be64(last)
    assert ErrorCounter.decode(counter.encode()) == counter


@given(st.binary(max_size=40).filter(lambda b: len(b) != 16))
def test_error_counter_decode_rejects_other_lengths(raw: bytes) -> None:
    with pytest.raises(ValueError):
        ErrorCounter.decode(raw)


def test_backoff_doubles_from_60s_to_64min() -> None:
    minute = 60_000
    expected = [1, 2, 4, 8, 16, 32, 64, 64, 64, 64]
    counter = ErrorCounter.first(1_000)
    for n, minutes in enumerate(expected, start=1):
        assert counter.errors == n
        assert counter.delay_msec(minute) == minutes * minute
        assert counter.next_try(minute) == counter.last_try + minutes * minute
        counter = counter.bump(counter.next_try(minute))


@given(st.integers(min_value=1, max_value=1000), MSEC, st.integers(min_value=1, max_value=10**7))
def test_backoff_formula(n: int, last: int, delay: int) -> None:
    counter = ErrorCounter(n, last)
    assert counter.next_try(delay) == last + delay * 2 ** min(n - 1, 6)


def test_bump_counts_and_restamps() -> None:
    assert ErrorCounter.first(5) == ErrorCounter(1, 5)
    assert ErrorCounter(3, 5).bump(9) == ErrorCounter(4, 9)


# -- queue keys -------------------------------------------------------------------------


@given(MSEC, st.binary(min_size=32, max_size=32))
def test_queue_key_is_be64_time_then_hash(when: int, h: bytes) -> None:
    key = queue_key(when, h)
    assert key == be64(when) + h
    assert parse_queue_key(key) == (when, h)


@given(MSEC, MSEC, st.binary(min_size=32, max_size=32), st.binary(min_size=32, max_size=32))
def test_queue_keys_order_by_time_first(t1: int, t2: int, h1: bytes, h2: bytes) -> None:
    if t1 < t2:
        assert queue_key(t1, h1) < queue_key(t2, h2)


def test_parse_queue_key_rejects_wrong_length() -> None:
    with pytest.raises(ValueError):
        parse_queue_key(b"\0" * 39)
