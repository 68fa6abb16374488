"""Partition assignment of a cluster layout version: zones, capacity shares, movement.

The contract is checked the way blocks see it: 10,000 random block hashes are mapped to
partitions with ``partition_of_hash`` and each node's share of their copies is compared
with its feasible capacity share (water-filling, computed here independently).
"""

from __future__ import annotations

import collections
import hashlib
import random
from collections.abc import Mapping, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trioblock._core import datalayout
from trioblock._core.assignment import (
    N_PARTITIONS,
    PARTITION_BITS,
    assign_partitions,
    partition_of_hash,
)

Nodes = dict[str, tuple[str, int]]
Assignment = tuple[tuple[str, ...], ...]
TB = 10**12

HASHES = [hashlib.blake2b(i.to_bytes(4, "big"), digest_size=32).digest() for i in range(10_000)]
#: how many of the 10,000 hashes fall in each partition
HITS = collections.Counter(partition_of_hash(h) for h in HASHES)

#: worst figures seen by this run (printed by the summary test, quoted in docs/placement.md)
WORST = {"deviation": 0.0, "exact": 0.0, "movement": 0.0}


# -- reference computations (independent of the module) --------------------------------


def feasible_targets(nodes: Mapping[str, tuple[str, int]], rf: int) -> dict[str, float]:
    """Each node's feasible number of copies (out of N_PARTITIONS * rf), by bisection."""
    zones: dict[str, list[str]] = collections.defaultdict(list)
    for n, (z, _) in nodes.items():
        zones[z].append(n)
    nz = len(zones)
    lo = N_PARTITIONS if nz <= rf else 0

    def hi(members: list[str]) -> int:
        return N_PARTITIONS * (min(len(members), rf - nz + 1) if nz <= rf else 1)

    zcap = {z: sum(nodes[n][1] for n in m) for z, m in zones.items()}
    zshare = clamp_fill(
        zcap, {z: lo for z in zones}, {z: hi(m) for z, m in zones.items()}, N_PARTITIONS * rf
    )
    out: dict[str, float] = {}
    for z, members in zones.items():
        caps = {n: nodes[n][1] for n in members}
        out.update(
            clamp_fill(
                caps, dict.fromkeys(members, 0), dict.fromkeys(members, N_PARTITIONS), zshare[z]
            )
        )
    return out


def clamp_fill(
    weights: Mapping[str, int], lo: Mapping[str, int], hi: Mapping[str, int], total: float
) -> dict[str, float]:
    def at(lam: float) -> dict[str, float]:
        return {k: min(hi[k], max(lo[k], lam * w)) for k, w in weights.items()}

    a, b = 0.0, max(hi[k] / w for k, w in weights.items())
    for _ in range(200):
        mid = (a + b) / 2
        a, b = (mid, b) if sum(at(mid).values()) < total else (a, mid)
    return at(b)


def shares(assignment: Assignment) -> collections.Counter[str]:
    """Copies per node over the 10,000 sample hashes."""
    out: collections.Counter[str] = collections.Counter()
    for p, part in enumerate(assignment):
        for n in part:
            out[n] += HITS[p]
    return out


def moved(old: Sequence[Sequence[str]], new: Assignment) -> int:
    return sum(len(set(b) - set(a)) for a, b in zip(old, new, strict=True))


def min_moves(nodes: Nodes, rf: int, old: Sequence[Sequence[str]], new: Assignment) -> int:
    """Fewest moved copies of any zone-valid assignment with the same copies per node.

    An exact min-cost flow: source -> node (its new number of copies) -> (partition,
    zone) slot, one unit at most, costing 1 unless the node held that partition before;
    slot -> partition (at most the copies the zone may hold in one partition; when zones
    are fewer than copies the first unit is forced by a large negative cost) -> sink (rf).
    """
    zones = sorted({z for z, _ in nodes.values()})
    zmin = 1 if len(zones) <= rf else 0
    zmax = {z: (rf - len(zones) + 1 if zmin else 1) for z in zones}
    count = collections.Counter(n for part in new for n in part)
    big = 10 * N_PARTITIONS * rf
    flow = MinCostFlow()
    for n in nodes:
        flow.edge("s", n, count[n], 0)
    for p in range(N_PARTITIONS):
        flow.edge(("p", p), "t", rf, 0)
        for z in zones:
            if zmin:
                flow.edge((p, z), ("p", p), 1, -big)
            if zmax[z] > zmin:
                flow.edge((p, z), ("p", p), zmax[z] - zmin, 0)
        for n, (z, _) in nodes.items():
            flow.edge(n, (p, z), 1, 0 if n in old[p] else 1)
    got, cost = flow.run("s", "t")
    assert got == N_PARTITIONS * rf
    return cost + big * zmin * N_PARTITIONS * len(zones)


class MinCostFlow:
    """Primal-dual min-cost flow: shortest distances (SPFA), then Dinic blocking flows
    on the edges along shortest paths, until the sink is out of reach."""

    def __init__(self) -> None:
        self.ids: dict[object, int] = {}
        self.adj: list[list[int]] = []
        self.to: list[int] = []
        self.cap: list[int] = []
        self.cost: list[int] = []

    def vertex(self, v: object) -> int:
        if v not in self.ids:
            self.ids[v] = len(self.adj)
            self.adj.append([])
        return self.ids[v]

    def edge(self, u: object, v: object, cap: int, cost: int) -> None:
        a, b = self.vertex(u), self.vertex(v)
        for x, y, c, w in ((a, b, cap, cost), (b, a, 0, -cost)):
            self.adj[x].append(len(self.to))
            self.to.append(y)
            self.cap.append(c)
            self.cost.append(w)

    def run(self, source: object, sink: object) -> tuple[int, int]:
        s, t = self.ids[source], self.ids[sink]
        adj, to, cap, cost = self.adj, self.to, self.cap, self.cost
        inf = 1 << 30
        total = spent = 0
        while True:
            dist = [inf] * len(adj)
            dist[s] = 0
            queue, queued = collections.deque([s]), [False] * len(adj)
            while queue:
                u = queue.popleft()
                queued[u] = False
                for e in adj[u]:
                    v = to[e]
                    if cap[e] > 0 and dist[u] + cost[e] < dist[v]:
                        dist[v] = dist[u] + cost[e]
                        if not queued[v]:
                            queued[v] = True
                            queue.append(v)
            if dist[t] == inf:
                return total, spent
            while True:  # Dinic phases on the tight edges
                level = [-1] * len(adj)
                level[s] = 0
                queue = collections.deque([s])
                while queue:
                    u = queue.popleft()
                    for e in adj[u]:
                        v = to[e]
                        if cap[e] > 0 and level[v] < 0 and dist[u] + cost[e] == dist[v]:
                            level[v] = level[u] + 1
                            queue.append(v)
                if level[t] < 0:
                    break
                ptr = [0] * len(adj)
                while True:  # one augmenting path per loop, iterative DFS
                    path: list[int] = []
                    u = s
                    while u != t:
                        edges = adj[u]
                        while ptr[u] < len(edges):
                            e = edges[ptr[u]]
                            v = to[e]
                            if (
                                cap[e] > 0
                                and level[v] == level[u] + 1
                                and (dist[u] + cost[e] == dist[v])
                            ):
                                break
                            ptr[u] += 1
                        if ptr[u] == len(edges):
                            if u == s:
                                break
                            level[u] = -1  # dead end
                            u = to[path.pop() ^ 1]
                            ptr[u] += 1
                            continue
                        path.append(e)
                        u = v
                    if u != t:
                        break
                    pushed = min(cap[e] for e in path)
                    for e in path:
                        cap[e] -= pushed
                        cap[e ^ 1] += pushed
                    total += pushed
                    spent += pushed * dist[t]


def check_rules(nodes: Nodes, rf: int, assignment: Assignment) -> None:
    nzones = len({z for z, _ in nodes.values()})
    assert len(assignment) == N_PARTITIONS
    for part in assignment:
        assert len(part) == rf and len(set(part)) == rf, part
        assert set(part) <= set(nodes), part
        assert len({nodes[n][0] for n in part}) == min(rf, nzones), part


def check_balance(nodes: Nodes, rf: int, assignment: Assignment) -> None:
    """Each node's share of the sample copies is within ±20 % of its feasible share."""
    targets = feasible_targets(nodes, rf)
    got = shares(assignment)
    per_partition = collections.Counter(n for part in assignment for n in part)
    for n, target in targets.items():
        # exact copies per partition: rounding away from the feasible target only
        assert abs(per_partition[n] - target) <= 2, (n, per_partition[n], target)
        if target >= 30:
            exact = abs(per_partition[n] - target) / target
            WORST["exact"] = max(WORST["exact"], exact)
            expected = target / (N_PARTITIONS * rf) * len(HASHES) * rf
            deviation = abs(got[n] - expected) / expected
            WORST["deviation"] = max(WORST["deviation"], deviation)
            assert deviation <= 0.2, (n, got[n], expected)


def check_movement(nodes: Nodes, rf: int, old: Assignment, new: Assignment) -> float:
    minimum = min_moves(nodes, rf, old, new)
    actual = moved(old, new)
    assert actual <= 1.25 * minimum + 1, (actual, minimum)
    ratio = actual / minimum if minimum else 1.0
    if minimum >= 20:  # below that, one copy is a large ratio
        WORST["movement"] = max(WORST["movement"], ratio)
    return ratio


# -- partition_of_hash ------------------------------------------------------------------


def test_partition_is_the_top_bits_of_bytes_0_and_1() -> None:
    assert N_PARTITIONS == 1 << PARTITION_BITS == 256
    assert partition_of_hash(bytes([0xAB, 0xCD]) + bytes(30)) == 0xAB
    assert partition_of_hash(bytes([0x00, 0xFF, 0xFF, 0xFF])) == 0
    assert partition_of_hash(bytes([0xFF, 0x00]) + bytes(30)) == 255
    # bytes 2..3 (the data directories' partition) do not matter
    h = bytes([0x12, 0x34, 0x56, 0x78])
    assert partition_of_hash(h) == partition_of_hash(h[:2] + b"\x00\x00")
    assert datalayout.partition_of(h) != datalayout.partition_of(h[:2] + b"\x00\x01")
    with pytest.raises(ValueError, match="2 bytes"):
        partition_of_hash(b"\x01")


def test_random_hashes_spread_over_every_partition() -> None:
    assert set(HITS) == set(range(N_PARTITIONS))
    assert min(HITS.values()) >= 15 and max(HITS.values()) <= 70


# -- fixed scenarios --------------------------------------------------------------------


def equal(n: int, zones: int | None = None) -> Nodes:
    return {f"n{i:02d}": (f"z{i % (zones or n)}", TB) for i in range(n)}


@pytest.mark.parametrize("rf", [1, 2, 3, 5])
def test_equal_nodes_are_balanced(rf: int) -> None:
    nodes = equal(8)
    a = assign_partitions(nodes, rf)
    check_rules(nodes, rf, a)
    check_balance(nodes, rf, a)


def test_deterministic_and_independent_of_mapping_order() -> None:
    rng = random.Random(7)
    items = [(f"node-{i}", (f"z{i % 4}", rng.randint(1, 5) * TB)) for i in range(20)]
    a = assign_partitions(dict(items), 3)
    b = assign_partitions(dict(reversed(items)), 3)
    assert a == b == assign_partitions(dict(items), 3)
    assert assign_partitions(dict(items), 3, a) == a  # a fixed point


def test_weighted_capacities_where_rendezvous_hashing_fails() -> None:
    # capacities 2,1,1,1,1 with rf 3: the big node should hold 1/3 of the copies
    nodes = {"big": ("a", 2 * TB)} | {f"n{i}": (f"z{i}", TB) for i in range(4)}
    a = assign_partitions(nodes, 3)
    check_rules(nodes, 3, a)
    check_balance(nodes, 3, a)
    assert sum("big" in part for part in a) == N_PARTITIONS * 3 * 2 // 6


def test_a_zone_too_big_for_its_share_is_capped() -> None:
    # zone "a" has half the capacity but may hold only one copy of each partition
    nodes = {"a1": ("a", 3 * TB), "a2": ("a", 3 * TB)} | {f"b{i}": (f"z{i}", TB) for i in range(6)}
    a = assign_partitions(nodes, 3)
    check_rules(nodes, 3, a)
    check_balance(nodes, 3, a)
    assert all(sum(n in ("a1", "a2") for n in part) == 1 for part in a)


def test_fewer_zones_than_copies_puts_a_copy_in_every_zone() -> None:
    nodes = {f"a{i}": ("a", TB) for i in range(6)} | {"b0": ("b", TB), "b1": ("b", TB)}
    a = assign_partitions(nodes, 3)
    check_rules(nodes, 3, a)  # both zones in every partition
    check_balance(nodes, 3, a)  # zone b holds a third of the copies, not a quarter


def test_adding_an_equal_node_moves_about_rf_over_n_plus_one() -> None:
    nodes = equal(8)
    old = assign_partitions(nodes, 3)
    bigger = nodes | {"n08": ("z8", TB)}
    new = assign_partitions(bigger, 3, old)
    check_rules(bigger, 3, new)
    check_balance(bigger, 3, new)
    assert moved(old, new) <= round(1.05 * N_PARTITIONS * 3 / 9)
    check_movement(bigger, 3, old, new)
    for before, after in zip(old, new, strict=True):  # the nodes that stay keep their order
        assert [n for n in after if n in before] == [n for n in before if n in after]


def test_any_previous_of_the_right_length_is_accepted() -> None:
    nodes = equal(5, zones=2)
    junk = [("gone", "n00", "n00", "n01", "n02"), (), ("n03",), ("n04", "n00", "gone2")] * 64
    a = assign_partitions(nodes, 3, junk)
    check_rules(nodes, 3, a)
    check_balance(nodes, 3, a)
    assert a == assign_partitions(nodes, 3, junk)


def test_removing_a_node_moves_only_its_copies() -> None:
    nodes = equal(9, zones=3)
    old = assign_partitions(nodes, 3)
    smaller = {n: r for n, r in nodes.items() if n != "n04"}
    new = assign_partitions(smaller, 3, old)
    check_rules(smaller, 3, new)
    check_balance(smaller, 3, new)
    assert moved(old, new) == sum("n04" in part for part in old)


def test_changing_a_zone_keeps_what_can_stay() -> None:
    nodes = equal(8)
    old = assign_partitions(nodes, 3)
    changed = nodes | {"n03": ("z1", TB)}
    new = assign_partitions(changed, 3, old)
    check_rules(changed, 3, new)
    check_balance(changed, 3, new)
    check_movement(changed, 3, old, new)


def test_fifty_nodes_add_and_grow() -> None:
    rng = random.Random(50)
    nodes = {f"n{i:02d}": (f"z{i % 5}", rng.randint(1, 4) * TB) for i in range(50)}
    old = assign_partitions(nodes, 3)
    check_rules(nodes, 3, old)
    for changed in (nodes | {"n50": ("z2", 4 * TB)}, nodes | {"n07": ("z2", 8 * TB)}):
        new = assign_partitions(changed, 3, old)
        check_rules(changed, 3, new)
        check_movement(changed, 3, old, new)


@pytest.mark.parametrize(
    ("before", "rf", "changed"),
    [
        # one zone: the grown node can only take holes in partitions it is not in
        ({n: ("z0", 1) for n in "abcde"}, 2, {"a": ("z0", 2)}),
        # a node moves to a zone that already holds copies of the partitions it held
        (
            {"a": ("z2", 3), "b": ("z2", 3), "c": ("z1", 2), "d": ("z3", 4), "e": ("z4", 3)}
            | {"f": ("z2", 1), "g": ("z3", 2), "h": ("z3", 3)},
            3,
            {"h": ("z1", 3)},
        ),
        # fewer zones than copies: the big node must join partitions held twice in a zone
        (
            {"a": ("z2", 4), "b": ("z2", 1), "c": ("z0", 1), "d": ("z0", 1), "e": ("z2", 2)}
            | {"f": ("z2", 1), "g": ("z1", 1), "h": ("z1", 2), "i": ("z1", 3), "j": ("z0", 1)},
            4,
            {"a": ("z2", 8)},
        ),
    ],
)
def test_hard_changes_move_close_to_the_minimum(
    before: dict[str, tuple[str, int]], rf: int, changed: dict[str, tuple[str, int]]
) -> None:
    nodes = {n: (z, c * TB) for n, (z, c) in before.items()}
    after = nodes | {n: (z, c * TB) for n, (z, c) in changed.items()}
    old = assign_partitions(nodes, rf)
    new = assign_partitions(after, rf, old)
    check_rules(after, rf, new)
    check_balance(after, rf, new)
    assert moved(old, new) <= 1.05 * min_moves(after, rf, old, new)


def test_a_cluster_growing_and_shrinking_step_by_step() -> None:
    rng = random.Random(12)
    nodes: Nodes = {f"n{i}": (f"z{i}", TB) for i in range(3)}
    assignment = assign_partitions(nodes, 3)
    steps = [f"n{i}" for i in range(3, 12)] + ["-n1", "-n5", "-n8", "-n3"]
    for step in steps:
        before = assignment
        if step.startswith("-"):
            del nodes[step[1:]]
        else:
            nodes[step] = (f"z{rng.randrange(5)}", rng.choice([1, 2, 4]) * TB)
        assignment = assign_partitions(nodes, 3, before)
        check_rules(nodes, 3, assignment)
        check_balance(nodes, 3, assignment)
        check_movement(nodes, 3, before, assignment)


def test_replication_factor_change_keeps_copies() -> None:
    nodes = equal(6, zones=3)
    old = assign_partitions(nodes, 2)
    new = assign_partitions(nodes, 3, old)
    check_rules(nodes, 3, new)
    assert all(set(a) <= set(b) for a, b in zip(old, new, strict=True))
    back = assign_partitions(nodes, 2, new)
    check_rules(nodes, 2, back)
    assert all(set(a) <= set(b) for a, b in zip(back, new, strict=True))


def test_validation() -> None:
    nodes = equal(3)
    with pytest.raises(ValueError, match="replication_factor"):
        assign_partitions(nodes, 0)
    with pytest.raises(ValueError, match="replication_factor"):
        assign_partitions(nodes, 4)
    with pytest.raises(ValueError, match="capacity"):
        assign_partitions(nodes | {"n03": ("z", 0)}, 2)
    with pytest.raises(ValueError, match="256 partitions"):
        assign_partitions(nodes, 2, [("n00", "n01")] * 255)


# -- generated role sets ----------------------------------------------------------------


@st.composite
def role_sets(draw: st.DrawFn) -> tuple[Nodes, int]:
    n = draw(st.integers(1, 10))
    nzones = draw(st.integers(1, n))
    nodes = {
        f"n{i}": (f"z{draw(st.integers(0, nzones - 1))}", draw(st.sampled_from([1, 2, 3, 4])) * TB)
        for i in range(n)
    }
    rf = draw(st.integers(1, min(n, 4)))
    return nodes, rf


@st.composite
def changes(draw: st.DrawFn) -> tuple[Nodes, int, Nodes]:
    nodes, rf = draw(role_sets())
    zones = sorted({z for z, _ in nodes.values()} | {"znew"})
    kind = draw(st.sampled_from(["add", "remove", "capacity", "zone"]))
    victim = draw(st.sampled_from(sorted(nodes)))
    after = dict(nodes)
    if kind == "add":
        after["added"] = (draw(st.sampled_from(zones)), draw(st.sampled_from([1, 2, 4])) * TB)
    elif kind == "remove" and len(nodes) > rf:
        del after[victim]
    elif kind == "capacity":
        after[victim] = (nodes[victim][0], draw(st.sampled_from([1, 2, 3, 5, 8])) * TB)
    else:
        after[victim] = (draw(st.sampled_from(zones)), nodes[victim][1])
    return nodes, rf, after


@settings(max_examples=150, deadline=None)
@given(role_sets())
def test_generated_role_sets_follow_the_rules(case: tuple[Nodes, int]) -> None:
    nodes, rf = case
    a = assign_partitions(nodes, rf)
    check_rules(nodes, rf, a)
    check_balance(nodes, rf, a)
    assert assign_partitions(nodes, rf, a) == a  # nothing to move: nothing moves


@settings(max_examples=150, deadline=None)
@given(changes())
def test_changing_one_node_moves_little(case: tuple[Nodes, int, Nodes]) -> None:
    before, rf, after = case
    old = assign_partitions(before, rf)
    new = assign_partitions(after, rf, old)
    check_rules(after, rf, new)
    check_balance(after, rf, new)
    check_movement(after, rf, old, new)


def test_zz_report_worst_figures(capsys: pytest.CaptureFixture[str]) -> None:
    with capsys.disabled():
        print(
            f"\nworst capacity-share deviation: {WORST['deviation']:.3f} over the sample"
            f" hashes, {WORST['exact']:.3f} in copies per partition;"
            f" worst movement / minimum {WORST['movement']:.3f}"
        )
