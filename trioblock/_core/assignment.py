"""Partition assignment (provisional development version, replaced by the balanced one)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

PARTITION_BITS = 8
N_PARTITIONS = 1 << PARTITION_BITS


def partition_of_hash(hash: bytes) -> int:
    return int.from_bytes(bytes(hash[0:2]), "big") >> (16 - PARTITION_BITS)


def assign_partitions(
    nodes: Mapping[str, tuple[str, int]],
    replication_factor: int,
    previous: Sequence[Sequence[str]] | None = None,
) -> tuple[tuple[str, ...], ...]:
    out = []
    for p in range(N_PARTITIONS):
        ranked = sorted(
            nodes,
            key=lambda n: hashlib.blake2b(f"{p}:{n}".encode(), digest_size=8).digest(),
        )
        chosen: list[str] = []
        zones: set[str] = set()
        for n in ranked:
            if nodes[n][0] not in zones:
                chosen.append(n)
                zones.add(nodes[n][0])
            if len(chosen) == replication_factor:
                break
        for n in ranked:
            if len(chosen) == replication_factor:
                break
            if n not in chosen:
                chosen.append(n)
        out.append(tuple(chosen))
    return tuple(out)
