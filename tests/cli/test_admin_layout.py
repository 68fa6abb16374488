"""The node side of ``trioblock layout`` (the admin service's ``layout_*`` ops), in
virtual time on the testing kit's cluster: staging, applying, views, refusals, sizes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import cbor2
import pytest
import trio
import trio.testing

import trioblock
from trioblock._cli.admin_service import AdminRequestError, admin_handler, answer_admin
from trioblock._cli.layout_admin import MAX_NODES_PAGE, MAX_STAGED
from trioblock._cli.metrics_http import registry_for, render_metrics
from trioblock._net.codec import MAX_MESSAGE_SIZE
from trioblock.testing import Cluster, open_cluster

TiB = 1 << 40


async def ask(bm: trioblock.BlockManager, op: str, **args: Any) -> dict[str, Any]:
    reply = await answer_admin(bm, {"op": op, **args})
    assert isinstance(reply, dict)
    # Every reply crosses the wire as one CBOR message.
    assert len(cbor2.dumps(reply)) < MAX_MESSAGE_SIZE - 1024, op
    return reply


async def settled(cluster: Cluster, version: int) -> None:
    """Until every node sees ``version`` settled with nothing left to move (surplus
    copies handed off too)."""

    def done(s: trioblock.LayoutStatus) -> bool:
        return s.settled and s.version == version and s.blocks_left == 0

    with trio.fail_after(600):
        while not all(done(bm.layout_status()) for bm in cluster.nodes.values()):  # noqa: ASYNC110 (polled state)
            await trio.sleep(1)


async def test_stage_show_apply_and_follow(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_cluster(tmp_path, n=3, gc_delay=30.0) as c:
        n0 = c.nodes["n0"]
        blocks = {}
        for i in range(10):
            data = os.urandom(300) + bytes([i])
            h = await n0.put_block(data)
            await n0.add_reference(h, f"o{i}")
            blocks[h] = data
        await c.add_node("n3")
        staged = await ask(n0, "layout_stage", action="assign", node="n3", zone="", capacity=TiB)
        assert staged["version"] == 1
        assert staged["staged"] == [
            {
                "node": "n3",
                "role": {"zone": "", "capacity": TiB, "address": None},
                "previous": None,
                "staged_msec": staged["staged"][0]["staged_msec"],
            }
        ]
        assert any("no address" in w for w in staged["warnings"])
        preview = staged["preview"]
        assert preview["version"] == 2 and preview["nodes"] == 4
        # Adding a fourth node of equal capacity moves about a quarter of the copies.
        assert 0.15 < preview["copies_moving"] / preview["copies"] < 0.35
        assert preview["partitions"]["n3"]["before"] == 0
        assert preview["partitions"]["n3"]["after"] > 0

        show = await ask(n0, "layout_show")
        assert show["version"] == 1 and show["live_versions"] == [1]
        assert [r["node"] for r in show["roles"]] == ["n0", "n1", "n2"]
        assert sum(r["partitions"] for r in show["roles"]) == show["partitions"] * 3
        assert [s["node"] for s in show["staged"]] == ["n3"]

        applied = await ask(n0, "layout_apply")
        assert applied["version"] == 2 and applied["previous_version"] == 1
        assert [ch["node"] for ch in applied["changes"]] == ["n3"]
        assert (await ask(n0, "layout_show"))["staged"] == []

        await settled(c, 2)
        status = await ask(n0, "layout_status")
        assert status["settled"] and status["live_versions"] == [2]
        assert status["blocks_left"] == 0 and status["bytes_to_move"] == 0
        assert {n["node"]: n["synced_version"] for n in status["nodes"]} == {
            "n0": 2,
            "n1": 2,
            "n2": 2,
            "n3": 2,
        }
        history = await ask(n0, "layout_history")
        assert [(r["version"], r["live"]) for r in history["records"]] == [(1, False), (2, True)]
        assert history["records"][0]["retired_msec"] is not None
        assert history["records"][1]["nodes"] == ["n0", "n1", "n2", "n3"]
        for h, data in blocks.items():
            assert await c.nodes["n3"].get_block(h) == data

        # Then one node leaves: it drains.
        await ask(n0, "layout_stage", action="remove", node="n1")
        assert (await ask(n0, "layout_apply"))["version"] == 3
        await settled(c, 3)
        drained = {n["node"]: n for n in (await ask(n0, "layout_status"))["nodes"]}
        assert drained["n1"]["role"] is None and drained["n1"]["drained"]
        assert c.nodes["n1"].stored().blocks == 0


async def test_stage_accumulates_keeps_what_is_not_given_and_reverts(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_cluster(tmp_path, n=3) as c:
        n0 = c.nodes["n0"]
        await ask(n0, "layout_stage", action="assign", node="n3", zone="dc2", capacity=TiB)
        await ask(n0, "layout_stage", action="assign", node="n1", capacity=2 * TiB)
        reply = await ask(n0, "layout_stage", action="remove", node="n2")
        by_node = {s["node"]: s for s in reply["staged"]}
        assert sorted(by_node) == ["n1", "n2", "n3"]
        # n1 keeps its zone ("" from the static layout) and gets the new capacity.
        assert by_node["n1"]["role"] == {"zone": "", "capacity": 2 * TiB, "address": None}
        assert by_node["n1"]["previous"] == {"zone": "", "capacity": TiB, "address": None}
        assert by_node["n2"]["role"] is None
        # Re-assigning a staged node replaces its staged role.
        again = await ask(n0, "layout_stage", action="assign", node="n3", capacity=3 * TiB)
        assert {s["node"]: s["role"] for s in again["staged"]}["n3"] == {
            "zone": "dc2",
            "capacity": 3 * TiB,
            "address": None,
        }
        # Removing a node that only has a staged assignment unstages it.
        unstaged = await ask(n0, "layout_stage", action="remove", node="n3")
        assert "n3" not in {s["node"] for s in unstaged["staged"]}
        assert (await ask(n0, "layout_revert")) == {"dropped": 2, "version": 1}
        assert (await ask(n0, "layout_show"))["staged"] == []
        assert n0.layout_status().version == 1


async def test_the_stage_is_kept_in_the_database(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_cluster(tmp_path, n=3) as c:
        await ask(c.nodes["n0"], "layout_stage", action="assign", node="n7", zone="z", capacity=5)
        n0 = await c.restart("n0")
        assert [s["node"] for s in (await ask(n0, "layout_show"))["staged"]] == ["n7"]


async def test_apply_records_the_addresses_the_node_file_knows(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_cluster(tmp_path, n=3) as c:
        n0 = c.nodes["n0"]
        handler = admin_handler({"n0": "10.0.0.1:3901", "n1": "10.0.0.2:3901"})
        await handler(
            n0,
            {
                "op": "layout_stage",
                "action": "assign",
                "node": "n3",
                "zone": "",
                "capacity": TiB,
                "address": "10.0.0.4:3901",
            },
        )
        reply = await handler(n0, {"op": "layout_apply"})
        assert isinstance(reply, dict)
        assert reply["addresses_recorded"] == ["n0", "n1"]
        roles = n0.layout_status().nodes
        assert roles["n0"].role == trioblock.NodeRole(
            "", roles["n0"].role.capacity, "10.0.0.1:3901"
        )  # type: ignore[union-attr]
        assert roles["n1"].role.address == "10.0.0.2:3901"  # type: ignore[union-attr]
        assert roles["n2"].role.address is None  # type: ignore[union-attr]
        assert roles["n3"].role.address == "10.0.0.4:3901"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("request_", "match"),
    [
        ({"op": "layout_stage", "action": "grow"}, "unknown layout_stage action"),
        ({"op": "layout_stage", "action": "assign", "node": "bad id"}, "node id"),
        ({"op": "layout_stage", "action": "assign", "node": "n9", "zone": "z"}, "capacity"),
        ({"op": "layout_stage", "action": "assign", "node": "n9", "capacity": 5}, "zone"),
        (
            {"op": "layout_stage", "action": "assign", "node": "n9", "zone": "", "capacity": 0},
            "capacity must be > 0",
        ),
        (
            {"op": "layout_stage", "action": "assign", "node": "n9", "zone": "", "capacity": "1T"},
            "number of bytes",
        ),
        ({"op": "layout_stage", "action": "remove", "node": "n9"}, "has no role"),
        ({"op": "layout_apply"}, "nothing is staged"),
        ({"op": "layout_apply", "write_quorum": 5}, "layout change refused: write quorum"),
        ({"op": "layout_apply", "write_quorum": "2"}, "whole number"),
        ({"op": "layout_show", "limit": 0}, "limit"),
        ({"op": "layout_history", "start": -1}, "start"),
    ],
)
async def test_bad_layout_requests_are_refused(
    tmp_path: Path,
    autojump_clock: trio.testing.MockClock,
    request_: dict[str, Any],
    match: str,
) -> None:
    async with open_cluster(tmp_path, n=3) as c:
        with pytest.raises(AdminRequestError, match=match):
            await answer_admin(c.nodes["n0"], request_)
        assert c.nodes["n0"].layout_status().version == 1


async def test_an_invalid_stage_is_refused_at_apply_and_kept(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_cluster(tmp_path, n=3) as c:
        n0 = c.nodes["n0"]
        reply = await ask(n0, "layout_stage", action="remove", node="n1")
        assert "fewer than the replication factor" in reply["preview"]["error"]
        with pytest.raises(AdminRequestError, match="refused: 2 storage node"):
            await answer_admin(n0, {"op": "layout_apply"})
        assert [s["node"] for s in (await ask(n0, "layout_show"))["staged"]] == ["n1"]
        # With a replication factor the cluster can hold, it applies.
        applied = await ask(n0, "layout_apply", replication_factor=2)
        assert applied["version"] == 2
        assert n0.layout.replication_factor == 2


async def test_a_gateway_refuses_to_stage_but_shows(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_cluster(tmp_path, n=3) as c, c.open_gateway() as gw:
        with pytest.raises(AdminRequestError, match="is a gateway"):
            await answer_admin(gw, {"op": "layout_stage", "action": "remove", "node": "n1"})
        with pytest.raises(AdminRequestError, match="is a gateway"):
            await answer_admin(gw, {"op": "layout_apply"})
        show = await ask(gw, "layout_show")
        assert show["version"] == 1 and show["staged"] == []


async def test_a_fixed_layout_says_so(
    open_node: Any, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_node() as bm:
        show = await ask(bm, "layout_show")
        assert show["fixed"] is True
        with pytest.raises(AdminRequestError, match="is fixed"):
            await answer_admin(
                bm, {"op": "layout_stage", "action": "assign", "node": "x", "capacity": 1}
            )


async def test_replies_fit_in_a_frame_with_the_largest_layouts(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_cluster(tmp_path, n=3) as c:
        n0 = c.nodes["n0"]
        host = "h" * 240

        def role(i: int) -> trioblock.NodeRole:
            return trioblock.NodeRole("z" * 60 + f"{i:04d}", TiB, f"{host}{i:04d}.x:65535")

        big = {f"{'n' * 59}{i:05d}": role(i) for i in range(300)}
        await n0.apply_layout(big)
        for i in range(MAX_STAGED):
            name = f"{'s' * 59}{i:05d}"
            await ask(
                n0,
                "layout_stage",
                action="assign",
                node=name,
                zone="y" * 64,
                capacity=TiB,
                address=f"{host}{i:04d}.y:65535",
            )
        with pytest.raises(AdminRequestError, match="at most"):
            await answer_admin(
                n0,
                {
                    "op": "layout_stage",
                    "action": "assign",
                    "node": "one-more",
                    "zone": "",
                    "capacity": 1,
                },
            )
        show = await ask(n0, "layout_show")  # ask() checks each reply's size
        assert len(show["roles"]) == MAX_NODES_PAGE and show["next"] is not None
        assert len(show["staged"]) == MAX_STAGED
        roles = list(show["roles"])
        while show["next"] is not None:
            show = await ask(n0, "layout_show", after=show["next"])
            roles.extend(show["roles"])
        assert len(roles) == 303
        status = await ask(n0, "layout_status")
        assert status["total_nodes"] >= 303 and len(status["nodes"]) == MAX_NODES_PAGE
        await ask(n0, "layout_history")


def gauge(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in the metrics")


async def test_metrics_follow_the_layout_change(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_cluster(tmp_path, n=3, gc_delay=30.0) as c:
        n0 = c.nodes["n0"]
        registry, collector = registry_for(n0)

        async def scrape() -> str:
            return (await render_metrics(n0, registry, collector)).decode()

        await settled(c, 1)  # (each node reports being synced to version 1 first)
        before = await scrape()
        assert gauge(before, "trioblock_layout_version") == 1
        assert gauge(before, "trioblock_layout_live_versions") == 1
        assert gauge(before, "trioblock_layout_settled") == 1
        for i in range(5):
            h = await n0.put_block(os.urandom(100) + bytes([i]))
            await n0.add_reference(h, "o")
        await c.add_node("n3")
        await n0.apply_layout({"n3": trioblock.NodeRole(capacity=TiB)})
        moving = await scrape()
        assert gauge(moving, "trioblock_layout_version") == 2
        assert gauge(moving, "trioblock_layout_live_versions") == 2
        assert gauge(moving, "trioblock_layout_settled") == 0
        await settled(c, 2)
        after = await scrape()
        assert gauge(after, "trioblock_layout_live_versions") == 1
        assert gauge(after, "trioblock_layout_synced_version") == 2
        assert gauge(after, "trioblock_layout_blocks_to_move") == 0
        assert gauge(after, "trioblock_layout_bytes_to_move") == 0


async def test_forget_declares_a_dead_removed_node_drained(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_cluster(tmp_path, n=3, gc_delay=30.0) as c:
        n0 = c.nodes["n0"]
        await c.kill("n2")
        await c.add_node("n3")
        with pytest.raises(trioblock.LayoutError, match="role"):
            await ask(n0, "layout_forget", node="n2")
        await n0.apply_layout({"n2": None, "n3": trioblock.NodeRole(capacity=TiB)})
        with trio.fail_after(600):
            while n0.layout_status().live_versions != [2]:  # noqa: ASYNC110 (polled state)
                await trio.sleep(1)
        with pytest.raises(AdminRequestError):
            await ask(n0, "layout_forget")
        reply = await ask(n0, "layout_forget", node="n2")
        assert reply == {"forgotten": "n2", "version": 2}
        await settled(c, 2)
        assert n0.layout_status().nodes["n2"].drained
