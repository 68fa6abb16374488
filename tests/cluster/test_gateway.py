"""Gateways: processes that use a cluster without storing anything."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

import trioblock
from trioblock import ConfigError, GatewayError, NodeClosedError, blake2sum
from trioblock.testing import Cluster, open_cluster

DATA = b"through the gateway " * 500
H = blake2sum(DATA)


async def counts(cluster: Cluster) -> dict[str, int]:
    return {n: bm.get_block_rc(H) for n, bm in sorted(cluster.nodes.items())}


@pytest.mark.parametrize("transport", ["memory", "tcp"])
async def test_a_gateway_puts_gets_streams_and_references(tmp_path: Path, transport: str) -> None:
    async with (
        open_cluster(tmp_path, n=3, transport=transport) as cluster,
        cluster.open_gateway("app") as gw,
    ):
        assert gw.is_gateway
        assert await gw.put_block(DATA) == H
        assert await gw.get_block(H) == DATA
        async with gw.stream_block(H) as chunks:
            assert b"".join([c async for c in chunks]) == DATA
        await gw.add_reference(H, "app/v1")
        await gw.add_reference(H, "app/v2")
        await gw.remove_reference(H, "app/v1")
        with trio.fail_after(10):
            while await counts(cluster) != {"n0": 1, "n1": 1, "n2": 1}:  # noqa: ASYNC110
                await trio.sleep(0.01)
        assert not await gw.has_local_block(H)
        assert gw.references(H) == []  # a gateway keeps no view of its own
    assert not (tmp_path / "app").exists()


async def test_storage_only_members_say_it_is_a_gateway(tmp_path: Path) -> None:
    async with open_cluster(tmp_path, n=3) as cluster, cluster.open_gateway("app") as gw:
        assert gw.workers() == []
        for call in (
            lambda: gw.incref(H),
            lambda: gw.decref(H),
            lambda: gw.get_block_rc(H),
            gw.rc_len,
            gw.resync_queue_len,
            gw.list_resync_errors,
            lambda: gw.purge(H),
            lambda: gw.set_resync_workers(2),
            gw.scrub_status,
        ):
            with pytest.raises(GatewayError, match="app is a gateway"):
                call()
        with pytest.raises(GatewayError):
            await gw.scrub("start")
        with pytest.raises(GatewayError):
            await gw.sync_references()
    with pytest.raises(NodeClosedError):
        await gw.put_block(b"after close")


async def test_gateway_configuration_is_checked(tmp_path: Path) -> None:
    async with open_cluster(tmp_path, n=3) as cluster:
        storage_node = trioblock.Config(
            node_id="n0", metadata_dir=None, data_dir=None, rpc_secret=cluster.rpc_secret
        )
        with pytest.raises(ConfigError, match="storage node"):
            async with trioblock.open_block_manager(
                storage_node, layout=cluster.layout, transport=cluster.net.transport("n0")
            ):
                pass
        alone = trioblock.Config(node_id="gw", metadata_dir=None, data_dir=None)
        with pytest.raises(ConfigError, match="layout and a transport"):
            async with trioblock.open_block_manager(alone):
                pass


async def test_a_gateway_write_needs_the_quorum(tmp_path: Path, autojump_clock) -> None:
    async with (
        open_cluster(tmp_path, n=3, rpc_timeout=5.0) as cluster,
        cluster.open_gateway("app") as gw,
    ):
        await gw.put_block(DATA)
        await cluster.stop("n1")
        await gw.add_reference(H, "ok with two of three")
        await cluster.stop("n2")
        with pytest.raises(trioblock.QuorumError):
            await gw.add_reference(H, "one of three is not enough")
        with pytest.raises(trioblock.QuorumError):
            await gw.put_block(DATA)


async def test_a_gateway_opened_from_a_nodes_file(tmp_path: Path) -> None:
    async with open_cluster(tmp_path / "c", n=3, transport="tcp") as cluster:
        peers = "\n".join(f'{n} = "{cluster.address(n)}"' for n in sorted(cluster.nodes))
        node_file = tmp_path / "n0.toml"
        node_file.write_text(
            'node_id = "n0"\nmetadata_dir = "meta"\ndata_dir = "data"\n'
            'rpc_secret = "test"\nreplication_factor = 3\nwrite_quorum = 2\n'
            f'rpc_timeout = "5s"\n\n[peers]\n{peers}\n'
        )
        async with trioblock.open_gateway_from_config(node_file, "app") as gw:
            assert gw.is_gateway and gw.config.rpc_timeout == 5.0
            assert gw.layout.write_quorum == 2
            assert await gw.put_block(DATA) == H
            await gw.add_reference(H, "from the node's file")
            assert await gw.get_block(H) == DATA
            assert await gw.missing_blocks([H]) == set()
        assert not (tmp_path / "meta").exists()  # a gateway stores nothing


async def test_a_gateway_needs_a_file_that_lists_the_cluster(tmp_path: Path) -> None:
    node_file = tmp_path / "alone.toml"
    node_file.write_text('node_id = "n0"\nmetadata_dir = "meta"\ndata_dir = "data"\n')
    with pytest.raises(ConfigError) as info:
        async with trioblock.open_gateway_from_config(node_file):
            pass
    assert info.value.field == "peers"
