"""What a node reports about the work it does for others: requests it serves are
counted, and a catch-up after a restart is logged in summary, not per block."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import trio

from trioblock.testing import open_cluster


async def test_a_storage_node_counts_the_puts_and_gets_it_serves(
    tmp_path: Path, autojump_clock
) -> None:
    async with open_cluster(tmp_path, n=3) as cluster, cluster.open_gateway("app") as gw:
        hashes = [await gw.put_block(f"block {i} ".encode() * 300) for i in range(5)]
        await trio.sleep(1)  # the copies beyond the quorum land too
        for h in hashes:
            await gw.get_block(h)
        nodes = cluster.nodes.values()
        assert [bm.metrics.puts for bm in nodes] == [0, 0, 0]  # no node's own call
        assert sum(bm.metrics.puts_served for bm in nodes) == 15  # 5 blocks × 3 copies
        assert sum(bm.metrics.gets_served for bm in nodes) == 5
        assert gw.metrics.puts == 5 and gw.metrics.gets == 5
        assert gw.metrics.puts_served == 0


async def test_catching_up_after_a_restart_logs_a_summary_not_a_line_per_block(
    tmp_path: Path, autojump_clock, caplog: pytest.LogCaptureFixture
) -> None:
    async with open_cluster(tmp_path, n=3) as cluster:
        await cluster.stop("n2")
        n0 = cluster.nodes["n0"]
        hashes = []
        for i in range(60):
            h = await n0.put_block(f"written while n2 was down {i} ".encode() * 100)
            await n0.add_reference(h, "snapshot")
            hashes.append(h)
        caplog.set_level(logging.INFO, logger="trioblock.resync")
        caplog.clear()
        n2 = await cluster.start("n2")
        await n2.sync_references()
        await trio.sleep(120)
        assert all([await n2.has_local_block(h) for h in hashes])
        assert n2.metrics.resync_received == 60
        lines = [r.getMessage() for r in caplog.records if "fetch" in r.getMessage()]
        assert 1 <= len(lines) <= 3, lines
        assert all(line.startswith("n2: ") for line in lines), lines
        assert sum(int(line.split()[3]) for line in lines) == 60, lines
