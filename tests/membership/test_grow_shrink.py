"""Membership change in virtual time: nodes join, leave and are replaced while serving."""

from __future__ import annotations

import os

import pytest
import trio
import trio.testing

import trioblock
from trioblock.testing import open_cluster

TiB = 1 << 40


async def settle(cluster) -> trioblock.LayoutStatus:
    """Wait (virtual time) until every running node sees the layout change settled."""
    with trio.fail_after(600):
        while True:
            statuses = [bm.layout_status() for bm in cluster.nodes.values()]
            if statuses and all(s.settled for s in statuses):
                versions = {s.version for s in statuses}
                if len(versions) == 1:
                    return statuses[0]
            await trio.sleep(1.0)


async def holders(cluster, h) -> set[str]:
    return {n for n, bm in cluster.nodes.items() if await bm.has_local_block(h)}


async def test_add_a_fourth_node(tmp_path, autojump_clock):
    async with open_cluster(tmp_path, n=3, gc_delay=30.0) as c:
        gw = c.nodes["n0"]
        blocks = {}
        for i in range(40):
            data = os.urandom(200) + bytes([i])
            h = await gw.put_block(data)
            await gw.add_reference(h, f"owner-{i}")
            blocks[h] = data
        n3 = await c.add_node("n3")
        assert n3.layout_status().version == 1  # learned from the others
        v = await c.nodes["n1"].apply_layout({"n3": trioblock.NodeRole(capacity=TiB)})
        assert v == 2
        status = await settle(c)
        assert status.live_versions == [2]
        layout = c.layout
        assert layout.version == 2 and "n3" in layout.nodes
        on_n3 = 0
        for h, data in blocks.items():
            assert await holders(c, h) == set(layout.storage_nodes(h))
            on_n3 += "n3" in layout.storage_nodes(h)
            for bm in c.nodes.values():
                assert await bm.get_block(h) == data
            for node in layout.storage_nodes(h):
                assert [r.owner for r in c.nodes[node].references(h)] == [
                    f"owner-{list(blocks).index(h)}".encode()
                ]
        assert on_n3 > 0


async def test_remove_a_node_drains_it(tmp_path, autojump_clock):
    async with open_cluster(tmp_path, n=4, gc_delay=30.0) as c:
        bm = c.nodes["n0"]
        blocks = {}
        for i in range(40):
            data = os.urandom(100) + bytes([i])
            h = await bm.put_block(data)
            await bm.add_reference(h, f"o{i}")
            blocks[h] = data
        await bm.apply_layout({"n1": None})
        status = await settle(c)
        assert status.nodes["n1"].drained
        assert c.nodes["n1"].stored().blocks == 0
        assert c.nodes["n1"].ref_len() == 0
        for h, data in blocks.items():
            assert "n1" not in c.layout.storage_nodes(h)
            assert await holders(c, h) == set(c.layout.storage_nodes(h))
            assert await c.nodes["n2"].get_block(h) == data


async def test_replace_a_dead_node(tmp_path, autojump_clock):
    async with open_cluster(tmp_path, n=3, gc_delay=30.0) as c:
        bm = c.nodes["n0"]
        blocks = {}
        for i in range(30):
            data = os.urandom(100) + bytes([i])
            h = await bm.put_block(data)
            await bm.add_reference(h, f"o{i}")
            blocks[h] = data
        await c.kill("n2")
        await c.add_node("n3")
        await bm.apply_layout({"n2": None, "n3": trioblock.NodeRole(capacity=TiB)})
        # Reads never fail meanwhile.
        for h, data in blocks.items():
            assert await c.nodes["n3"].get_block(h) == data
        status = await settle(c)
        assert status.nodes["n3"].synced_version == 2
        for h in blocks:
            assert await holders(c, h) == set(c.layout.storage_nodes(h))


async def test_invalid_changes_store_nothing(tmp_path, autojump_clock):
    async with open_cluster(tmp_path, n=3) as c:
        bm = c.nodes["n0"]
        with pytest.raises(trioblock.LayoutError, match="fewer than the replication"):
            await bm.apply_layout({"n1": None})
        with pytest.raises(trioblock.LayoutError, match="no role"):
            await bm.apply_layout({"nx": None})
        with pytest.raises(trioblock.LayoutError, match="capacity"):
            await bm.apply_layout({"n3": trioblock.NodeRole(capacity=0)})
        with pytest.raises(trioblock.LayoutError, match="quorum"):
            await bm.apply_layout({}, write_quorum=4)
        assert bm.layout.version == 1
        assert [r.version for r in bm.layout_history()] == [1]


async def test_fixed_layout_refuses(tmp_path, autojump_clock):
    config = trioblock.Config(node_id="solo", metadata_dir=tmp_path / "m", data_dir=tmp_path / "d")
    async with trioblock.open_block_manager(config) as bm:
        with pytest.raises(trioblock.LayoutError, match="fixed"):
            await bm.apply_layout({"x": trioblock.NodeRole(capacity=1)})
