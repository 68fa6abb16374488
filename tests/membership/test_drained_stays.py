"""A node drained and switched off (as ``layout status`` says it may be) does not keep
later layout changes from settling (virtual time)."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

import trioblock
from trioblock.testing import Cluster, open_cluster

TiB = 1 << 40


async def settled(c: Cluster, version: int) -> trioblock.LayoutStatus:
    with trio.fail_after(600):
        while True:
            statuses = [bm.layout_status() for bm in c.nodes.values()]
            if all(s.settled and s.version == version for s in statuses):
                return statuses[0]
            await trio.sleep(1)


@pytest.mark.xfail(
    strict=True,
    reason=(
        "library bug: LayoutHistory.is_drained needs report.drained >= the current "
        "version, so a node drained at version v and then switched off counts as "
        "draining again at v+1, and no later layout change ever settles"
    ),
)
async def test_a_switched_off_drained_node_stays_drained(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_cluster(tmp_path, n=4, gc_delay=30.0) as c:
        bm = c.nodes["n0"]
        h = await bm.put_block(b"a block" * 100)
        await bm.add_reference(h, "owner")
        await bm.apply_layout({"n3": None})
        status = await settled(c, 2)
        assert status.nodes["n3"].drained
        await c.stop("n3")  # switched off, as it may be
        await bm.apply_layout({"n2": trioblock.NodeRole(capacity=2 * TiB)})
        status = await settled(c, 3)
        assert status.nodes["n3"].drained
