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
        # The dead node never says it is drained: the operator forgets it once the
        # old version is retired.
        with trio.fail_after(600):
            while bm.layout_status().live_versions != [2]:  # noqa: ASYNC110
                await trio.sleep(1)
        await bm.forget_node("n2")
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


async def test_concurrent_applies_of_one_number_converge(tmp_path, autojump_clock):
    async with open_cluster(tmp_path, n=4, gc_delay=30.0) as c:
        c.net.partition(["n0", "n1"], ["n2", "n3"])
        big = trioblock.NodeRole(capacity=2 * (1 << 40) * 1024)
        await c.nodes["n0"].apply_layout({"n1": big})
        await c.nodes["n2"].apply_layout({"n3": None})
        c.net.heal()
        await settle(c)
        layouts = {bm.layout for bm in c.nodes.values()}
        assert len(layouts) == 1
        (winner,) = layouts
        assert winner.version == 2
        for bm in c.nodes.values():
            records = [r for r in bm.layout_history() if r.version == 2]
            assert sorted(r.superseded for r in records) == [False, True]
            (won,) = [r for r in records if not r.superseded]
            assert won.digest == winner.digest


async def test_node_down_during_apply_learns_it_back(tmp_path, autojump_clock):
    async with open_cluster(tmp_path, n=3, gc_delay=30.0) as c:
        bm = c.nodes["n0"]
        hashes = []
        for i in range(20):
            h = await bm.put_block(os.urandom(64) + bytes([i]))
            await bm.add_reference(h, "o")
            hashes.append(h)
        await c.stop("n2")
        await c.add_node("n3")
        await bm.apply_layout({"n3": trioblock.NodeRole(capacity=TiB)})
        await trio.sleep(30)
        n2 = await c.start("n2")
        assert await n2.sync_layout() == 2  # learned on its return
        await settle(c)
        for h in hashes:
            assert await holders(c, h) == set(c.layout.storage_nodes(h))


async def test_second_version_before_the_first_is_synced(tmp_path, autojump_clock):
    async with open_cluster(tmp_path, n=3, gc_delay=30.0) as c:
        bm = c.nodes["n0"]
        blocks = {}
        for i in range(30):
            data = os.urandom(64) + bytes([i])
            h = await bm.put_block(data)
            await bm.add_reference(h, "o")
            blocks[h] = data
        await c.add_node("n3")
        await c.add_node("n4")
        c.net.partition(["n3"], ["n0", "n1", "n2", "n4"])
        await bm.apply_layout({"n3": trioblock.NodeRole(capacity=TiB)})
        await bm.apply_layout({"n4": trioblock.NodeRole(capacity=TiB), "n3": None, "n1": None})
        assert bm.layout_status().live_versions == [1, 2, 3]
        for h, data in blocks.items():
            assert await c.nodes["n4"].get_block(h) == data
            await bm.add_reference(h, "during")
        c.net.heal()
        status = await settle(c)
        assert status.live_versions == [3]
        assert status.nodes["n1"].drained and status.nodes["n3"].drained
        for h, data in blocks.items():
            assert await holders(c, h) == set(c.layout.storage_nodes(h))
            assert await c.nodes["n2"].get_block(h) == data
            for node in c.layout.storage_nodes(h):
                assert {r.owner for r in c.nodes[node].references(h)} == {b"o", b"during"}


async def test_a_removed_node_drains_blocks_nobody_referenced(tmp_path, autojump_clock):
    # A block put and never referenced has no count row: only a walk of the disk finds
    # it. A removed node must still end up empty (it was never drained before).
    async with open_cluster(tmp_path, n=4, gc_delay=30.0) as c:
        n1 = c.nodes["n1"]
        orphans = [await n1.put_block(os.urandom(500)) for _ in range(5)]
        assert any([await n1.has_local_block(h) for h in orphans])
        await c.nodes["n0"].apply_layout({"n1": None})
        status = await settle(c)
        assert status.nodes["n1"].drained
        assert n1.stored().blocks == 0


async def test_a_stale_gateway_learns_the_layout_from_a_refusal(tmp_path, autojump_clock):
    async with open_cluster(tmp_path, n=4, gc_delay=30.0) as c, c.open_gateway("app") as gw:
        assert gw.layout.version == 1
        c.net.partition(["app"], c.node_ids)
        await c.nodes["n0"].apply_layout({"n1": None})
        await settle(c)  # version 1 is retired everywhere; the gateway heard nothing
        assert gw.layout.version == 1
        c.net.heal()
        # A block version 1 puts on n1: n1 refuses it (no live version gives it a copy),
        # and the gateway exchanges layouts with it on the spot.
        for i in range(200):
            data = b"stale-%d" % i
            h = trioblock.blake2sum(data)
            if "n1" in gw.layout.storage_nodes(h):
                break
        await gw.put_block(data)
        # The sends beyond the quorum finish without time passing (no gossip round).
        await trio.testing.wait_all_tasks_blocked()
        assert gw.layout.version == 2
        await gw.add_reference(h, "x")
        await trio.sleep(70)  # the storage node that lacks it fetches it (resync)
        assert await holders(c, h) == set(c.layout.storage_nodes(h))
        assert await c.nodes["n1"].has_local_block(h) is False


async def test_a_node_killed_mid_move_converges_once_back(tmp_path, autojump_clock):
    async with open_cluster(tmp_path, n=3, gc_delay=30.0) as c:
        bm = c.nodes["n0"]
        blocks = {}
        for i in range(60):
            data = os.urandom(2000) + bytes([i])
            h = await bm.put_block(data)
            await bm.add_reference(h, "o")
            blocks[h] = data
        await c.add_node("n3")
        c.net.set_delay("n3", 0.05)  # the move takes a while
        await bm.apply_layout({"n3": trioblock.NodeRole(capacity=TiB)})
        await trio.sleep(1.0)
        await c.kill("n3")  # mid-move, as a crash would
        assert bm.layout_status().live_versions == [1, 2]
        for h, data in blocks.items():  # reads go on meanwhile
            assert await c.nodes["n1"].get_block(h) == data
        await trio.sleep(30)
        await c.start("n3")
        status = await settle(c)
        assert status.live_versions == [2]
        for h, data in blocks.items():
            assert await holders(c, h) == set(c.layout.storage_nodes(h))
            assert await c.nodes["n3"].get_block(h) == data


async def test_a_dead_removed_node_can_be_forgotten(tmp_path, autojump_clock):
    async with open_cluster(tmp_path, n=3, gc_delay=30.0) as c:
        bm = c.nodes["n0"]
        h = await bm.put_block(b"kept" * 100)
        await bm.add_reference(h, "o")
        await c.kill("n2")
        await c.add_node("n3")
        with pytest.raises(trioblock.LayoutError, match="role"):
            await bm.forget_node("n2")  # still holds a role
        await bm.apply_layout({"n2": None, "n3": trioblock.NodeRole(capacity=TiB)})
        with trio.fail_after(600):
            while bm.layout_status().live_versions != [2]:  # noqa: ASYNC110
                await trio.sleep(1)
        assert not bm.layout_status().nodes["n2"].drained  # it never will say so itself
        assert not bm.layout_status().settled
        await bm.forget_node("n2")
        status = await settle(c)
        assert status.nodes["n2"].drained
        with pytest.raises(trioblock.LayoutError, match="not a node"):
            await bm.forget_node("nobody")
        # Should it come back after all, its own reports win again.
        n2 = await c.start("n2")
        await n2.sync_layout()
        with trio.fail_after(600):
            while not bm.layout_status().nodes["n2"].drained or n2.stored().blocks:  # noqa: ASYNC110
                await trio.sleep(1)
        assert await holders(c, h) == set(c.layout.storage_nodes(h))


async def test_handed_off_copies_go_within_the_gc_delay(tmp_path, autojump_clock):
    # A reference's arrival queues a check of its block 2 x rpc_timeout later (here
    # 240 s); the hand-off's deletion check must not be put off until then.
    async with open_cluster(tmp_path, n=3, gc_delay=10.0, rpc_timeout=120.0) as c:
        bm = c.nodes["n0"]
        hashes = []
        for i in range(20):
            h = await bm.put_block(os.urandom(300) + bytes([i]))
            await bm.add_reference(h, "o")
            hashes.append(h)
        await c.add_node("n3")
        await bm.apply_layout({"n3": trioblock.NodeRole(capacity=TiB)})
        with trio.fail_after(600):
            while bm.layout_status().live_versions != [2]:  # noqa: ASYNC110
                await trio.sleep(0.5)
        retired = trio.current_time()
        await settle(c)
        for h in hashes:
            assert await holders(c, h) == set(c.layout.storage_nodes(h))
        assert trio.current_time() - retired < 60
