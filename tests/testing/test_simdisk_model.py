"""The application model's operations with power cuts, on a 3-node cluster on simulated
disks: hypothesis draws puts, reference changes, reads, stops, restarts, wipes,
partitions, corruptions, passing time and ``PowerCut``; each example runs in its own
``trio.run`` under a MockClock, then ``check_converged`` asserts that no referenced block
was lost and no read returned wrong bytes."""

from __future__ import annotations

import os
import tempfile

import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trioblock.testing import (
    ClusterModel,
    Operation,
    PowerCut,
    Put,
    check_converged,
    open_cluster,
    run_operations,
)
from trioblock.testing.strategies import cluster_operations

NODES = ["n0", "n1", "n2"]
EXAMPLES = max(5, int(os.environ.get("TRIOBLOCK_STATEFUL_EXAMPLES", "75")) // 5)


def run_on_simulated_disks(operations: list[Operation], seed: int) -> ClusterModel:
    async def main() -> ClusterModel:
        with tempfile.TemporaryDirectory(prefix="trioblock-simdisk-") as tmp:
            async with open_cluster(
                tmp,
                n=3,
                disk="simulated",
                seed=seed,
                gc_delay=120.0,
                rpc_timeout=10.0,
                resync_retry_delay=5.0,
            ) as cluster:
                model = await run_operations(cluster, operations)
                await check_converged(cluster, model)
                return model

    return trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_a_power_cut_restarts_the_node_and_loses_no_referenced_block() -> None:
    cut = run_on_simulated_disks(
        [Put(b"kept" * 300, "n0"), PowerCut("n1"), Put(b"after" * 300, "n1"), PowerCut("n0")],
        seed=3,
    )
    assert cut.skipped == 0


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    cluster_operations(NODES, max_ops=20, max_size=4096, power_cuts=True),
    st.integers(0, 2**32),
)
def test_a_cluster_on_simulated_disks_survives_power_cuts(
    operations: list[Operation], seed: int
) -> None:
    run_on_simulated_disks(operations, seed)
