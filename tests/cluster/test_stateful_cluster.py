"""A stateful test of a 3-node in-process cluster against the application model.

Hypothesis draws sequences of puts, reference changes, reads, stops, restarts, wipes,
partitions, corruptions and passing time (``trioblock.testing.strategies``); each
example runs in its own ``trio.run`` under a MockClock with fresh directories, then the
cluster settles and ``check_converged`` asserts the invariants.
"""

from __future__ import annotations

import os
import tempfile

import trio
import trio.testing
from hypothesis import HealthCheck, given, settings

from trioblock.testing import check_converged, open_cluster, run_operations
from trioblock.testing.strategies import cluster_operations

NODES = ["n0", "n1", "n2"]
EXAMPLES = int(os.environ.get("TRIOBLOCK_STATEFUL_EXAMPLES", "75"))


def run_in_cluster(operations: list, **overrides: object) -> None:
    async def main() -> None:
        with tempfile.TemporaryDirectory(prefix="trioblock-stateful-") as tmp:
            async with open_cluster(tmp, n=3, **overrides) as cluster:
                model = await run_operations(cluster, operations)
                await check_converged(cluster, model)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(cluster_operations(NODES, max_ops=25, max_size=4096))
def test_cluster_never_loses_a_referenced_block(operations: list) -> None:
    run_in_cluster(operations, gc_delay=120.0, rpc_timeout=10.0, resync_retry_delay=5.0)


@settings(
    max_examples=max(5, EXAMPLES // 4), deadline=None, suppress_health_check=list(HealthCheck)
)
@given(cluster_operations(NODES, max_ops=25, max_size=4096))
def test_cluster_converges_without_compression(operations: list) -> None:
    run_in_cluster(
        operations, compression_level=None, gc_delay=120.0, rpc_timeout=10.0, resync_retry_delay=5.0
    )
