"""Hypothesis strategies for trioblock test suites (ours and users').

``block_contents()`` draws block plaintexts with many duplicates and a few large or
incompressible ones; ``cluster_operations(node_ids)`` draws sequences of operations for
:func:`trioblock.testing.run_operations`: puts, reference changes, reads, stops and
restarts, wipes, partitions, corruptions and the passing of virtual time (and, with
``power_cuts=True``, power cuts, for clusters on simulated disks). Sequences are
shaped so that, without a bug, no referenced block can be lost: at most one node is
unavailable (stopped or isolated) at a time, a wipe happens only while every other node is
up, and at most one copy of a block is corrupted between two settles.
"""

from __future__ import annotations

from collections.abc import Sequence

try:
    from hypothesis import strategies as st
except ModuleNotFoundError as exc:  # an extra: say how to get it
    raise ModuleNotFoundError(
        "trioblock.testing.strategies needs hypothesis: install trioblock[testing]",
        name=exc.name,
    ) from exc

from ._model import (
    Advance,
    Corrupt,
    Decref,
    Get,
    Heal,
    Incref,
    Isolate,
    Operation,
    PowerCut,
    Put,
    Settle,
    Start,
    Stop,
    Wipe,
)

#: A few fixed contents, so that puts of the same block happen often.
COMMON_CONTENTS = (b"", b"a", b"hello world" * 10, bytes(range(256)) * 16)


def block_contents(*, max_size: int = 8192) -> st.SearchStrategy[bytes]:
    """Block plaintexts: common duplicates, small random blobs, compressible runs."""
    return st.one_of(
        st.sampled_from(COMMON_CONTENTS),
        st.binary(max_size=min(64, max_size)),
        st.builds(
            lambda b, n: b * n,
            st.binary(min_size=1, max_size=8),
            st.integers(min_value=1, max_value=max(1, max_size // 8)),
        ),
        st.binary(min_size=max_size // 2, max_size=max_size),
    )


def cluster_operations(
    node_ids: Sequence[str], *, max_ops: int = 30, max_size: int = 8192, power_cuts: bool = False
) -> st.SearchStrategy[list[Operation]]:
    """Sequences of cluster operations for :func:`~trioblock.testing.run_operations`;
    with ``power_cuts``, ``PowerCut`` too (for clusters on simulated disks:
    ``open_cluster(..., disk="simulated")``)."""
    nodes = st.sampled_from(list(node_ids))
    block = st.integers(min_value=0, max_value=1 << 16)
    extra = [st.builds(PowerCut, nodes), st.builds(PowerCut, nodes)] if power_cuts else []
    op = st.one_of(
        st.builds(Put, block_contents(max_size=max_size), nodes),
        st.builds(Put, block_contents(max_size=max_size), nodes),
        st.builds(Incref, block),
        st.builds(Incref, block),
        st.builds(Decref, block),
        st.builds(Get, block, nodes),
        st.builds(Stop, nodes),
        st.builds(Start, nodes),
        st.builds(Wipe, nodes),
        st.builds(Isolate, nodes),
        st.just(Heal()),
        st.builds(Corrupt, block, nodes),
        st.builds(Advance, st.sampled_from([1.0, 30.0, 61.0, 300.0, 700.0])),
        st.just(Settle()),
        *extra,
    )
    return st.lists(op, max_size=max_ops)


__all__ = ["COMMON_CONTENTS", "block_contents", "cluster_operations"]
