"""A resync that failed while its peers were unreachable runs again when they answer."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from pathlib import Path

import pytest
import trio

from trioblock import TrioblockError, blake2sum
from trioblock.testing import open_cluster

DATA = b"a block that n2 loses while it is cut off"
H = blake2sum(DATA)


@pytest.mark.parametrize("who_calls", ["n2", "n1"], ids=["it-calls", "a-peer-calls"])
async def test_a_resync_backed_off_during_a_partition_runs_when_the_peers_answer(
    tmp_path: Path, autojump_clock: object, caplog: pytest.LogCaptureFixture, who_calls: str
) -> None:
    # Whether n2 connects to a peer or a peer connects to n2, the peer counts as back.
    async with open_cluster(tmp_path, n=3, rpc_timeout=10.0) as cluster:
        await cluster.nodes["n0"].put_block(DATA)
        await cluster.nodes["n0"].add_reference(H, "snap")
        await trio.sleep(1)
        cluster.net.partition(["n0"], ["n1", "n2"])
        await cluster.wipe("n2")  # n2 comes back empty
        await cluster.nodes["n2"].sync_references()  # and learns the reference from n1
        cluster.net.partition(["n1"], ["n0", "n2"])  # n2 now reaches no one
        await trio.sleep(150)  # its fetch fails, the retry backs off (60 s, then 120 s)
        n2 = cluster.nodes["n2"]
        assert n2.get_block_rc(H) == 1
        assert not await n2.has_local_block(H)
        assert n2.list_resync_errors()  # backed off: the next try is minutes away

        caplog.set_level(logging.INFO, logger="trioblock.resync")
        cluster.net.heal()
        await cluster.nodes[who_calls].sync_references()  # n2 and a peer talk again
        await trio.sleep(5)  # well within the back-off
        assert await n2.has_local_block(H)
        assert not n2.list_resync_errors()
        assert any(
            "answer" in r.getMessage() and "retried now" in r.getMessage() for r in caplog.records
        )


async def test_a_retry_the_database_refuses_leaves_the_node_running(
    tmp_path: Path, autojump_clock: object, caplog: pytest.LogCaptureFixture
) -> None:
    """Regression: a peer answering again while the metadata database refused the
    retry's write (another process holding it) took the whole node down."""
    async with open_cluster(tmp_path, n=3, rpc_timeout=10.0) as cluster:
        await cluster.nodes["n0"].put_block(DATA)
        await cluster.nodes["n0"].add_reference(H, "snap")
        await trio.sleep(1)
        cluster.net.partition(["n0"], ["n1", "n2"])
        await cluster.wipe("n2")
        await cluster.nodes["n2"].sync_references()
        cluster.net.partition(["n1"], ["n0", "n2"])
        await trio.sleep(150)
        n2 = cluster.nodes["n2"]
        assert n2.list_resync_errors()

        caplog.set_level(logging.INFO, logger="trioblock.resync")
        other = sqlite3.connect(
            next(cluster.metadata_dir("n2").glob("*.sqlite")), isolation_level=None
        )
        try:
            other.execute("BEGIN IMMEDIATE")  # another process holds the database
            cluster.net.heal()
            with contextlib.suppress(TrioblockError):
                await cluster.nodes["n1"].sync_references()  # n2 answers n1 again
            await trio.sleep(30)  # longer than the database's patience for a busy file
            assert any("could not be retried" in r.getMessage() for r in caplog.records)
        finally:
            other.execute("ROLLBACK")
            other.close()
        # The node is still up; the retry is tried again a minute later.
        assert "n2" in cluster.running()
        await trio.sleep(70)
        assert await n2.has_local_block(H)
        assert await n2.get_block(H) == DATA
