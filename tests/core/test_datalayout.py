"""``DataLayout``: 1024 partitions over data directories (DESIGN §2)."""

from __future__ import annotations

from pathlib import Path

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from trioblock import ConfigError, DataDir
from trioblock._core.datalayout import N_PARTITIONS, DataLayout, partition_of

A, B, C, D = (Path(f"/disk/{x}") for x in "abcd")


def counts(layout: DataLayout) -> dict[Path, int]:
    return {p: layout.partitions_of(p) for p in layout.dirs}


@given(st.binary(min_size=32, max_size=32))
def test_partition_is_big_endian_u16_of_bytes_2_and_3_mod_1024(h: bytes) -> None:
    assert partition_of(h) == ((h[2] << 8) | h[3]) % 1024
    assert 0 <= partition_of(h) < N_PARTITIONS == 1024


def test_partition_examples() -> None:
    assert partition_of(bytes([9, 9, 0x00, 0x05]) + bytes(28)) == 5
    assert partition_of(bytes([0, 0, 0x04, 0x01]) + bytes(28)) == 1
    assert partition_of(bytes([0, 0, 0xFF, 0xFF]) + bytes(28)) == 1023


def test_single_directory_is_primary_for_everything() -> None:
    layout = DataLayout.initial([DataDir(A)])
    assert layout.dirs == (A,)
    assert counts(layout) == {A: 1024}
    assert not layout.has_secondaries()
    assert layout.candidate_dirs(bytes(32)) == [A]
    assert layout.primary_dir(bytes(32)) == A


@given(st.lists(st.integers(1, 10**6), min_size=1, max_size=6))
def test_partitions_are_proportional_to_capacity(caps: list[int]) -> None:
    dirs = [DataDir(Path(f"/d{i}"), capacity=c) for i, c in enumerate(caps)]
    layout = DataLayout.initial(dirs)
    assert len(layout.primary) == 1024
    total = sum(caps)
    for d, c in zip(dirs, caps, strict=True):
        assert abs(layout.partitions_of(d.path) - 1024 * c / total) <= 1
    assert sum(counts(layout).values()) == 1024


def test_capacity_strings_are_parsed() -> None:
    layout = DataLayout.initial([DataDir(A, capacity="1T"), DataDir(B, capacity="3T")])
    assert counts(layout) == {A: 256, B: 768}


def test_layout_is_deterministic() -> None:
    dirs = [DataDir(A, capacity=3), DataDir(B, capacity=5), DataDir(C, capacity=7)]
    assert DataLayout.initial(dirs) == DataLayout.initial(dirs)


def test_read_only_directory_is_secondary_never_primary() -> None:
    dirs = [DataDir(A, capacity=1), DataDir(B, capacity=1), DataDir(C, read_only=True)]
    layout = DataLayout.initial(dirs)
    assert layout.partitions_of(C) == 0
    for part in range(N_PARTITIONS):
        assert layout.secondary[part] == (2,)
    h = bytes(32)
    assert layout.candidate_dirs(h)[-1] == C
    assert layout.primary_dir(h) != C


def test_no_writable_directory_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        DataLayout.initial([DataDir(A, read_only=True)])
    assert info.value.field == "data_dir"


def test_several_directories_need_capacities() -> None:
    with pytest.raises(ConfigError) as info:
        DataLayout.initial([DataDir(A), DataDir(B, capacity=1)])
    assert info.value.field == "data_dir"


@given(
    st.lists(st.integers(1, 100), min_size=1, max_size=4),
    st.lists(st.integers(1, 100), min_size=1, max_size=3),
)
def test_update_moves_as_few_partitions_as_possible(
    old_caps: list[int], new_caps: list[int]
) -> None:
    old_dirs = [DataDir(Path(f"/old{i}"), capacity=c) for i, c in enumerate(old_caps)]
    added = [DataDir(Path(f"/new{i}"), capacity=c) for i, c in enumerate(new_caps)]
    old = DataLayout.initial(old_dirs)
    new = old.update(old_dirs + added)
    before = counts(old)
    after = counts(new)
    # Partitions only leave old directories that lost share, never arrive at one.
    minimum = sum(max(0, before[d.path] - after[d.path]) for d in old_dirs)
    moved = [p for p in range(N_PARTITIONS) if new.dirs[new.primary[p]] != old.dirs[old.primary[p]]]
    assert len(moved) == minimum
    for d in old_dirs:
        assert after[d.path] <= before[d.path]
    # A moved partition keeps its old directory as a secondary location.
    for p in moved:
        old_dir = old.dirs[old.primary[p]]
        assert old_dir in new.candidate_dirs(bytes([0, 0, p >> 8, p & 0xFF]) + bytes(28))[1:]
    for p in set(range(N_PARTITIONS)) - set(moved):
        assert new.secondary[p] == ()


def test_update_with_same_directories_changes_nothing() -> None:
    dirs = [DataDir(A, capacity=1), DataDir(B, capacity=2)]
    layout = DataLayout.initial(dirs)
    assert layout.update(dirs) == layout


def test_removed_directory_partitions_move_and_it_is_forgotten() -> None:
    old = DataLayout.initial([DataDir(A, capacity=1), DataDir(B, capacity=1)])
    new = old.update([DataDir(A, capacity=1)])
    assert new.dirs == (A,)
    assert counts(new) == {A: 1024}
    assert not new.has_secondaries()


def test_rebalance_clears_secondaries_but_keeps_read_only() -> None:
    old = DataLayout.initial([DataDir(A, capacity=1)])
    dirs = [DataDir(A, capacity=1), DataDir(B, capacity=1), DataDir(C, read_only=True)]
    new = old.update(dirs)
    assert new.has_secondaries()
    assert not new.without_secondaries().has_secondaries()
    kept = new.with_read_only(dirs)
    assert all(s == (2,) for s in kept.secondary)
    assert kept.primary == new.primary


@given(st.lists(st.integers(1, 50), min_size=1, max_size=4))
def test_encode_decode_round_trip(caps: list[int]) -> None:
    dirs = [DataDir(Path(f"/d{i}"), capacity=c) for i, c in enumerate(caps)]
    layout = DataLayout.initial(dirs).update([*dirs, DataDir(Path("/extra"), capacity=7)])
    assert DataLayout.decode(layout.encode()) == layout


@pytest.mark.parametrize(
    "raw",
    [
        b"not cbor at all \xff",
        cbor2.dumps({"dirs": ["/a"]}),
        cbor2.dumps({"dirs": ["/a"], "primary": [0] * 10, "secondary": [[]] * 10}),
        cbor2.dumps({"dirs": ["/a"], "primary": [1] * 1024, "secondary": [[]] * 1024}),
        cbor2.dumps({"dirs": ["/a"], "primary": [0] * 1024, "secondary": [[3]] * 1024}),
    ],
)
def test_decode_rejects_bad_rows(raw: bytes) -> None:
    with pytest.raises(ConfigError) as info:
        DataLayout.decode(raw)
    assert info.value.field == "data_dir"


def test_a_rounding_unit_goes_to_the_new_directory_not_an_old_one() -> None:
    """Regression (found by hypothesis): capacities 1, 1, 68, 68 and a new directory of
    capacity 1 gave the first old directory an eighth partition while it held seven."""
    old_dirs = [DataDir(Path(f"/old{i}"), capacity=c) for i, c in enumerate([1, 1, 68, 68])]
    old = DataLayout.initial(old_dirs)
    new = old.update([*old_dirs, DataDir(Path("/new0"), capacity=1)])
    before, after = counts(old), counts(new)
    assert all(after[d.path] <= before[d.path] for d in old_dirs)
    assert after[Path("/new0")] == 1024 - sum(after[d.path] for d in old_dirs)
