"""Which storage nodes hold each cluster partition, for one layout version (pure).

Rules kept here:

- The hash space is cut into ``N_PARTITIONS`` (256) partitions; a block's partition is
  the top ``PARTITION_BITS`` of hash bytes 0..1 (data directories use bytes 2..3).
- Every partition is stored on ``replication_factor`` distinct nodes spread over
  ``min(replication_factor, number of zones)`` distinct zones: with at least as many zones
  as copies, at most one copy per zone; with fewer zones, every zone holds a copy.
- Each node's number of copies follows its capacity share as closely as those rules
  allow. The targets come from water-filling: zone targets in proportion to zone
  capacity, clamped to what the zone rule allows (at most one copy per partition, or
  ``rf - zones + 1`` when zones are fewer than copies, and at least one copy per
  partition then); then node targets in proportion to capacity within the zone, clamped
  to one copy per partition. The clamped excess is shared out proportionally.
- Given the previous version's assignment, copies stay where they are unless their node
  is gone, breaks the zone rule, or holds more than its new target; only those move.
  A node above target gives up copies where a node below target may take them (one
  that held the copy before costs no move), and the holes go to the eligible nodes
  furthest below target. A last pass meets the targets exactly, when the greedy fill
  could not, along the cheapest chains of replacements.
- Everything is deterministic: ids are sorted, ties are broken by blake2b-derived keys.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Mapping, Sequence

PARTITION_BITS = 8
N_PARTITIONS = 1 << PARTITION_BITS

_MASK = (1 << 64) - 1


def partition_of_hash(hash: bytes) -> int:
    """Cluster partition of a block: the top PARTITION_BITS of hash bytes 0..1.

    That is the big-endian u16 of bytes 0..1 shifted right by ``16 - PARTITION_BITS``;
    NOT bytes 2..3, which data directories use.
    """
    if len(hash) < 2:
        raise ValueError(f"a block hash has at least 2 bytes, got {len(hash)}")
    return int.from_bytes(bytes(hash[0:2]), "big") >> (16 - PARTITION_BITS)


def _key(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def _mix(a: int, b: int) -> int:
    """A pseudo-random 64-bit tie-break key for the pair of blake2b keys ``a``, ``b``."""
    return ((a ^ b) * 0x9E3779B97F4A7C15) & _MASK


def _water_fill(
    weights: Sequence[int], lo: Sequence[int], hi: Sequence[int], total: int
) -> list[float]:
    """Shares ``clamp(lam * weight, lo, hi)`` summing to ``total`` (exact water-filling).

    Each round shares what is left among the unclamped entries in proportion to their
    weights; if the entries above their ceiling overshoot by more than those below their
    floor undershoot, the final level can only be higher, so the former stay clamped at
    the ceiling (and symmetrically for the floors).
    """
    fixed: dict[int, float] = {}
    while True:
        free = [i for i in range(len(weights)) if i not in fixed]
        if not free:
            return [fixed[i] for i in range(len(weights))]
        rest = total - sum(fixed.values())
        weight = sum(weights[i] for i in free)
        vals = {i: rest * weights[i] / weight for i in free}
        over = {i: vals[i] - hi[i] for i in free if vals[i] > hi[i]}
        under = {i: lo[i] - vals[i] for i in free if vals[i] < lo[i]}
        if not over and not under:
            return [fixed.get(i, vals.get(i, 0.0)) for i in range(len(weights))]
        if sum(over.values()) >= sum(under.values()):
            fixed.update((i, float(hi[i])) for i in over)
        else:
            fixed.update((i, float(lo[i])) for i in under)


def _round(values: Sequence[float], hi: Sequence[int], total: int, now: Sequence[int]) -> list[int]:
    """Integers near ``values`` summing to ``total``: floors plus largest remainders.

    Entries that hold more than their floor now get the spare units first, so rounding
    alone never moves a copy.
    """
    exact = [round(v, 9) for v in values]
    out = [min(int(v), h) for v, h in zip(exact, hi, strict=True)]
    order = sorted(
        range(len(out)), key=lambda i: (out[i] < now[i], exact[i] - out[i], -i), reverse=True
    )
    need = total - sum(out)
    for i in order:
        if need > 0 and out[i] < hi[i]:
            out[i] += 1
            need -= 1
    return out


class _Assigner:
    """Mutable working state of one ``assign_partitions`` call (node and zone indexes)."""

    def __init__(self, nodes: Mapping[str, tuple[str, int]], rf: int) -> None:
        self.ids = sorted(nodes)
        zones = sorted({nodes[n][0] for n in self.ids})
        self.rf = rf
        self.zone_of = [zones.index(nodes[n][0]) for n in self.ids]
        self.cap = [nodes[n][1] for n in self.ids]
        self.members: list[list[int]] = [[] for _ in zones]
        for n, z in enumerate(self.zone_of):
            self.members[z].append(n)
        nz = len(zones)
        #: copies of one partition a zone must hold at least / may hold at most
        self.zmin = 1 if nz <= rf else 0
        self.zmax = [min(len(m), rf - nz + 1) if nz <= rf else 1 for m in self.members]
        self.node_key = [_key(n) for n in self.ids]
        self.zone_key = [_key(f"zone {z}") for z in zones]
        self.part_key = [_key(f"partition {p}") for p in range(N_PARTITIONS)]
        self.parts: list[list[int]] = [[] for _ in range(N_PARTITIONS)]
        self.old: list[frozenset[int]] = [frozenset()] * N_PARTITIONS
        self.count = [0] * len(self.ids)
        self.zcount = [0] * nz
        self.target: list[int] = []
        self.ztarget: list[int] = []

    def tie(self, p: int, n: int) -> int:
        return _mix(self.node_key[n], self.part_key[p])

    def zone_counts(self, p: int) -> list[int]:
        kz = [0] * len(self.members)
        for n in self.parts[p]:
            kz[self.zone_of[n]] += 1
        return kz

    def needed(self, kz: Sequence[int]) -> int:
        """Copies the partition needs at least, given ``kz`` copies in each zone."""
        return sum(max(k, self.zmin) for k in kz) if self.zmin else sum(kz)

    def zone_open(self, kz: Sequence[int], z: int, needed: int) -> bool:
        """Can one more copy go to zone ``z`` and the partition still be completed?"""
        return kz[z] < self.zmax[z] and (kz[z] < self.zmin or needed < self.rf)

    def add(self, p: int, n: int, at: int | None = None) -> None:
        self.parts[p].insert(len(self.parts[p]) if at is None else at, n)
        self.count[n] += 1
        self.zcount[self.zone_of[n]] += 1

    def remove(self, p: int, n: int) -> None:
        self.parts[p].remove(n)
        self.count[n] -= 1
        self.zcount[self.zone_of[n]] -= 1

    # -- the steps ------------------------------------------------------------------

    def keep_previous(self, previous: Sequence[Sequence[str]]) -> None:
        index = {n: i for i, n in enumerate(self.ids)}
        for p, entry in enumerate(previous):
            for nid in entry:
                n = index.get(nid)
                if n is not None and n not in self.parts[p]:
                    self.add(p, n)
            self.old[p] = frozenset(self.parts[p])

    def compute_targets(self) -> None:
        zcap = [sum(self.cap[n] for n in m) for m in self.members]
        zlo = [N_PARTITIONS * self.zmin] * len(zcap)
        zhi = [N_PARTITIONS * m for m in self.zmax]
        total = N_PARTITIONS * self.rf
        shares = _water_fill(zcap, zlo, zhi, total)
        self.ztarget = _round(shares, zhi, total, self.zcount)
        self.target = [0] * len(self.ids)
        for z, members in enumerate(self.members):
            caps = [self.cap[n] for n in members]
            hi = [N_PARTITIONS] * len(members)
            shares = _water_fill(caps, [0] * len(members), hi, self.ztarget[z])
            now = [self.count[n] for n in members]
            for n, t in zip(members, _round(shares, hi, self.ztarget[z], now), strict=True):
                self.target[n] = t

    def excess(self, n: int) -> int:
        return self.count[n] - self.target[n]

    def drop_conflicts(self) -> None:
        """Drop kept copies that break the zone rule (or exceed a lower ``rf``)."""
        for p in range(N_PARTITIONS):
            while True:
                kz = self.zone_counts(p)
                bad = [z for z, k in enumerate(kz) if k > self.zmax[z]]
                if not bad and self.needed(kz) > self.rf:
                    bad = [z for z, k in enumerate(kz) if k > self.zmin]
                if not bad:
                    break
                victim = max(
                    (n for n in self.parts[p] if self.zone_of[n] in bad),
                    key=lambda n: (self.excess(n), self.tie(p, n)),
                )
                self.remove(p, victim)

    def takers(self, p: int, among: Sequence[int], leaving: int | None = None) -> tuple[int, ...]:
        """The nodes of ``among`` that may fill a hole in ``p`` (once ``leaving`` left)."""
        kz = self.zone_counts(p)
        if leaving is not None:
            kz[self.zone_of[leaving]] -= 1
        needed = self.needed(kz)
        return tuple(
            m
            for m in among
            if m not in self.parts[p] and self.zone_open(kz, self.zone_of[m], needed)
        )

    def drop_excess(self) -> None:
        """Nodes above target give up copies, where a hole is easiest to fill.

        A hole is easy when nodes below target may take it (best: one that held the
        copy before, which costs no move). Holes are picked one at a time, among groups
        of partitions with the same candidates, and each pick uses up a unit of its best
        candidate's shortfall, so that the holes follow the shortfalls.
        """
        if all(self.excess(n) <= 0 for n in range(len(self.ids))):
            return
        short = [max(0, -self.excess(m)) for m in range(len(self.ids))]
        for p in range(N_PARTITIONS):  # the holes already there use up shortfalls first
            holes = self.rf - len(self.parts[p])
            if holes:
                can = self.takers(p, [m for m in range(len(self.ids)) if short[m]])
                for m in sorted(can, key=lambda m: (m not in self.old[p], -short[m], m))[:holes]:
                    short[m] -= 1
        for n in range(len(self.ids)):
            extra = self.excess(n)
            if extra <= 0:
                continue
            wanting = [m for m in range(len(self.ids)) if short[m] > 0]
            groups: dict[tuple[int, bool, tuple[int, ...]], list[tuple[int, int]]] = {}
            for p in range(N_PARTITIONS):
                if n not in self.parts[p]:
                    continue
                takers = self.takers(p, wanting, leaving=n)
                back = any(m in self.old[p] for m in takers)
                group = (self.rf - len(self.parts[p]), not back, takers)
                groups.setdefault(group, []).append((-self.tie(p, n), p))
            for members in groups.values():
                members.sort()
            for _ in range(extra):
                group = min(
                    (g for g, members in groups.items() if members),
                    key=lambda g: (g[0], g[1], -sum(short[m] for m in g[2]), g[2]),
                )
                _, p = groups[group].pop()
                self.remove(p, n)
                if group[2]:
                    taker = max(group[2], key=lambda m: (m in self.old[p], short[m], -m))
                    short[taker] = max(0, short[taker] - 1)

    def best(self, p: int, scores: Mapping[int, int], keys: Sequence[int]) -> int:
        """The highest-scoring candidate; ties broken by a per-partition hash."""
        top = max(scores.values())
        tied = [c for c, score in scores.items() if score == top]
        if len(tied) == 1:
            return tied[0]
        return max(tied, key=lambda c: _mix(keys[c], self.part_key[p]))

    def pick(self, p: int) -> int:
        """The eligible node (not in the partition, zone rule kept) furthest below target
        for a hole in ``p``: a previous holder if any, else the best node of the zone
        furthest below target. If no eligible node is below target: a previous holder
        (giving a copy back moves nothing), else the best node of the best zone."""
        part = self.parts[p]
        kz = self.zone_counts(p)
        needed = self.needed(kz)
        short = {
            n: self.target[n] - self.count[n]
            for n in self.old[p]
            if n not in part and self.zone_open(kz, self.zone_of[n], needed)
        }
        if short and max(short.values()) > 0:
            return self.best(p, short, self.node_key)
        zmax, zmin, room = self.zmax, self.zmin, needed < self.rf  # zone_open, inlined
        zdef = {
            z: self.ztarget[z] - self.zcount[z]
            for z in range(len(self.members))
            if kz[z] < zmax[z] and (room or kz[z] < zmin)
        }
        fallback = None
        while zdef:
            z = self.best(p, zdef, self.zone_key)
            del zdef[z]
            free = {m: self.target[m] - self.count[m] for m in self.members[z] if m not in part}
            if free:
                node = self.best(p, free, self.node_key)
                if free[node] > 0:
                    return node
                fallback = node if fallback is None else fallback
        if short:
            return self.best(p, short, self.node_key)
        assert fallback is not None
        return fallback

    def fill(self) -> None:
        """Give every hole to ``pick``'s node."""
        for p in range(N_PARTITIONS):
            while len(self.parts[p]) < self.rf:
                self.add(p, self.pick(p))

    def replaceable(self, p: int, x: int, c: int) -> bool:
        """Can ``c`` take ``x``'s place in the (full) partition ``p``?"""
        if c in self.parts[p]:
            return False
        zx, zc = self.zone_of[x], self.zone_of[c]
        if zx == zc:
            return True
        kz = self.zone_counts(p)
        return kz[zx] - 1 >= self.zmin and kz[zc] + 1 <= self.zmax[zc]

    def find_chain(self, start: int) -> list[tuple[int, int, int]] | None:
        """Cheapest chain of replacements moving one copy from ``start`` to a node below
        target: (partition, leaving node, arriving node) steps. Cost: old copies lost."""
        holders: list[list[int]] = [[] for _ in self.ids]
        for p, part in enumerate(self.parts):
            for n in part:
                holders[n].append(p)
        best: dict[int, int] = {start: 0}
        came: dict[int, tuple[int, int]] = {}
        queue: deque[tuple[int, int]] = deque([(0, start)])
        while queue:
            cost, x = queue.popleft()
            if cost > best[x]:
                continue
            if x != start and self.excess(x) < 0:
                steps = []
                while x != start:
                    prev, p = came[x]
                    steps.append((p, prev, x))
                    x = prev
                return steps[::-1]
            on_path = set()
            y = x
            while y != start:
                y, q = came[y]
                on_path.add(q)
            for p in holders[x]:
                if p in on_path:
                    continue
                leaving = x in self.old[p]
                for c in range(len(self.ids)):
                    step = 1 if leaving and c not in self.old[p] else 0
                    if cost + step < best.get(c, 1 << 30) and self.replaceable(p, x, c):
                        best[c] = cost + step
                        came[c] = (x, p)
                        if step:
                            queue.append((cost + 1, c))
                        else:
                            queue.appendleft((cost, c))
        return None

    def rebalance(self) -> None:
        """Move copies along replacement chains until every node meets its target."""
        over = sorted(range(len(self.ids)), key=lambda n: (-self.excess(n), n))
        while over and self.excess(over[0]) > 0:  # below-target nodes exist then too
            chain = self.find_chain(over[0])
            if chain is None:
                over.pop(0)
                continue
            for p, x, c in chain:  # c takes x's place
                at = self.parts[p].index(x)
                self.remove(p, x)
                self.add(p, c, at)
            over.sort(key=lambda n: (-self.excess(n), n))


def assign_partitions(
    nodes: Mapping[str, tuple[str, int]],
    replication_factor: int,
    previous: Sequence[Sequence[str]] | None = None,
) -> tuple[tuple[str, ...], ...]:
    """The nodes of each of the N_PARTITIONS partitions for one layout version.

    ``nodes`` maps each storage node's id to its (zone, capacity in bytes > 0);
    ``previous`` is the previous version's assignment (N_PARTITIONS entries), or None.
    Returns N_PARTITIONS tuples of ``replication_factor`` distinct node ids, spread over
    ``min(replication_factor, zones)`` zones, each node's share of copies following its
    capacity as closely as the zone rule allows, moving as few copies from ``previous``
    as it can. Raises ``ValueError`` on a bad ``replication_factor``, capacity or
    ``previous``.
    """
    if replication_factor < 1 or replication_factor > len(nodes):
        raise ValueError(
            f"replication_factor must be between 1 and the number of nodes ({len(nodes)}),"
            f" got {replication_factor}"
        )
    for nid, (_, capacity) in nodes.items():
        if capacity <= 0:
            raise ValueError(f"node {nid!r}: capacity must be > 0 bytes, got {capacity}")
    if previous is not None and len(previous) != N_PARTITIONS:
        raise ValueError(
            f"previous assignment must have {N_PARTITIONS} partitions, got {len(previous)}"
        )
    state = _Assigner(nodes, replication_factor)
    if previous is not None:
        state.keep_previous(previous)
    state.compute_targets()
    state.drop_conflicts()
    state.drop_excess()
    state.fill()
    state.rebalance()
    return tuple(tuple(state.ids[n] for n in part) for part in state.parts)
