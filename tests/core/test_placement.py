"""``StaticLayout`` (version 1 of a layout: partitions, zones, quorum) and ``LocalLayout``."""

from __future__ import annotations

import collections

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trioblock import ConfigError, Layout, LocalLayout, StaticLayout, blake2sum

hashes = st.binary(min_size=32, max_size=32)
NODES = [f"n{i}" for i in range(7)]


@given(hashes, st.integers(1, 7))
def test_storage_nodes_are_rf_distinct_members(h: bytes, rf: int) -> None:
    layout = StaticLayout(NODES, replication_factor=rf)
    chosen = layout.storage_nodes(h)
    assert len(chosen) == rf
    assert len(set(chosen)) == rf
    assert set(chosen) <= set(NODES)


@given(hashes)
def test_placement_is_deterministic_and_order_independent(h: bytes) -> None:
    a = StaticLayout(NODES, replication_factor=3)
    b = StaticLayout(list(reversed(NODES)), replication_factor=3)
    assert a.storage_nodes(h) == a.storage_nodes(h) == b.storage_nodes(h)
    assert a.read_nodes(h)[:3] == a.storage_nodes(h)


@given(hashes)
def test_placement_is_that_of_the_first_layout_version(h: bytes) -> None:
    layout = StaticLayout(NODES, replication_factor=3)
    first = layout.first_version
    assert first.version == 1 and list(first.nodes) == NODES
    assert layout.storage_nodes(h) == first.storage_nodes(h)


@given(hashes)
def test_three_zones_get_one_replica_each(h: bytes) -> None:
    zones = {f"n{i}": f"z{i % 3}" for i in range(9)}
    layout = StaticLayout(zones, replication_factor=3)
    chosen = layout.storage_nodes(h)
    assert len(set(chosen)) == 3
    assert {zones[n] for n in chosen} == {"z0", "z1", "z2"}
    assert all(layout.zone_of(n) == zones[n] for n in chosen)


@given(hashes)
def test_two_zones_are_both_used_before_a_second_replica(h: bytes) -> None:
    zones = {"a1": "A", "a2": "A", "a3": "A", "b1": "B", "b2": "B"}
    chosen = StaticLayout(zones, replication_factor=3).storage_nodes(h)
    assert len(set(chosen)) == 3
    assert {zones[n] for n in chosen} == {"A", "B"}


def test_placement_spreads_blocks_over_nodes() -> None:
    layout = StaticLayout(NODES, replication_factor=3)
    load = collections.Counter()
    for i in range(2000):
        load.update(layout.storage_nodes(blake2sum(b"%d" % i)))
    expected = 2000 * 3 / len(NODES)
    assert all(0.75 * expected < load[n] < 1.25 * expected for n in NODES)


@pytest.mark.parametrize(("rf", "quorum"), [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (7, 4)])
def test_write_quorum_defaults_to_a_majority(rf: int, quorum: int) -> None:
    assert StaticLayout(NODES, replication_factor=rf).write_quorum == quorum


def test_explicit_write_quorum_and_accessors() -> None:
    layout = StaticLayout(["b", "a", "c"], replication_factor=3, write_quorum=1)
    assert layout.write_quorum == 1
    assert layout.replication_factor == 3
    assert list(layout.nodes) == ["a", "b", "c"]
    assert isinstance(layout, Layout)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"nodes": []}, "layout.nodes"),
        ({"nodes": {}}, "layout.nodes"),
        ({"nodes": ["a", "b"], "replication_factor": 3}, "replication_factor"),
        ({"nodes": ["a", "b"], "replication_factor": 0}, "replication_factor"),
        ({"nodes": ["a", "b", "c"], "write_quorum": 0}, "write_quorum"),
        ({"nodes": ["a", "b", "c"], "write_quorum": 4}, "write_quorum"),
        ({"nodes": ["a", "b", "c"], "replication_factor": 2, "write_quorum": 3}, "write_quorum"),
    ],
)
def test_bad_layout_arguments_raise_config_error(kwargs: dict, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        StaticLayout(**kwargs)
    assert info.value.field == field


@given(hashes)
def test_local_layout_stores_everything_on_its_node(h: bytes) -> None:
    layout = LocalLayout("solo")
    assert layout.storage_nodes(h) == ["solo"]
    assert layout.read_nodes(h) == ["solo"]
    assert list(layout.nodes) == ["solo"]
    assert layout.replication_factor == 1
    assert layout.write_quorum == 1
    assert isinstance(layout, Layout)
