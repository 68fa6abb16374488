"""``trioblock layout`` against real ``trioblock serve`` processes, and ``join = true``.

- one node whose ``[peers]`` lists only itself (a cluster of one, replication 1): the
  staging flow across separate invocations, ``--json``, refusals and exit codes;
- node files with ``join = true``: what loads and what is refused;
- (slow) three nodes over TCP grow to four: the fourth starts with ``join = true``
  naming one member, ``layout assign`` + ``apply`` give it a role, ``layout status
  --json`` is polled until settled, and every block reads back byte-identical from
  every node.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from cli_kit import NodeProcess, Result, free_port, start_node

import trioblock
from trioblock._cli.layout import parse_capacity, watch_status
from trioblock._cli.nodefile import load_node_file
from trioblock._cli.output import Output
from trioblock.errors import ConfigError

Cli = Callable[..., Result]
TiB = 1 << 40


@pytest.fixture(scope="module")
def solo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    root = tmp_path_factory.mktemp("solo")
    port = free_port()
    with start_node(root, f'[peers]\nn0 = "127.0.0.1:{port}"\n', port=port) as running:
        yield running


def layout(cli: Cli, node: NodeProcess, *args: str) -> Result:
    return cli("layout", *args, *node.target)


def test_capacities_take_binary_units() -> None:
    assert parse_capacity("2T") == 2 * TiB
    assert parse_capacity("2TiB") == 2 * TiB
    assert parse_capacity("1.5t") == TiB * 3 // 2
    assert parse_capacity("500G") == 500 * 2**30
    assert parse_capacity("100M") == 100 * 2**20
    assert parse_capacity("2TB") == 2 * 10**12
    assert parse_capacity("4096") == 4096
    assert parse_capacity("10B") == 10
    for bad in ("", "T", "2X", "-1G", "0", "0.1", "1e9", "2 T B"):
        with pytest.raises(ValueError, match="capacity"):
            parse_capacity(bad)


def test_assign_remove_show_revert_accumulate_across_invocations(
    solo: NodeProcess, cli: Cli
) -> None:
    assert layout(cli, solo, "revert").code == 0
    first = layout(cli, solo, "assign", "n1", "-z", "dc1", "-c", "2T", "--address", "10.0.0.2:3901")
    assert first.code == 0, first.stderr
    assert "+ n1: zone dc1, capacity 2.0 TiB, address 10.0.0.2:3901" in first.stdout
    assert "apply would make version 2: 2 node(s)" in first.stdout
    second = layout(cli, solo, "assign", "n2", "--zone", "dc2", "--capacity", "500G")
    assert second.code == 0, second.stderr
    assert "no address" in second.stderr
    assert "staged changes (2):" in second.stdout
    shown = layout(cli, solo, "show", "--json")
    assert shown.code == 0
    view = shown.json()
    assert view["version"] == 1 and view["live_versions"] == [1]
    assert [r["node"] for r in view["roles"]] == ["n0"]
    assert view["roles"][0]["address"] is None
    assert {s["node"]: s["role"] for s in view["staged"]} == {
        "n1": {"zone": "dc1", "capacity": 2 * TiB, "address": "10.0.0.2:3901"},
        "n2": {"zone": "dc2", "capacity": 500 * 2**30, "address": None},
    }
    table = layout(cli, solo, "show")
    assert "layout version 1 (live: 1): 1 storage node(s), replication 1" in table.stdout
    assert "+ n2: zone dc2, capacity 500.0 GiB" in table.stdout
    removed = layout(cli, solo, "remove", "n0", "--json")
    assert removed.code == 0
    assert {s["node"]: s["role"] for s in removed.json()["staged"]}["n0"] is None
    reverted = layout(cli, solo, "revert", "--json")
    assert reverted.json() == {"dropped": 3, "version": 1}
    assert layout(cli, solo, "show", "--json").json()["staged"] == []


def test_refusals_and_usage_errors(solo: NodeProcess, cli: Cli) -> None:
    assert layout(cli, solo, "revert").code == 0
    nothing = layout(cli, solo, "apply")
    assert nothing.code == 1
    assert "nothing is staged" in nothing.stderr
    unknown = layout(cli, solo, "remove", "n9")
    assert unknown.code == 1
    assert "cannot remove n9: it has no role" in unknown.stderr
    new_without_capacity = layout(cli, solo, "assign", "n9", "-z", "dc1")
    assert new_without_capacity.code == 1
    assert "give its capacity" in new_without_capacity.stderr
    assert layout(cli, solo, "assign", "n9", "-z", "a", "-c", "2X").code == 2
    assert layout(cli, solo, "assign", "bad/id", "-z", "a", "-c", "1T").code == 2
    assert layout(cli, solo, "assign", "n9", "-c", "1T", "--address", "nowhere").code == 2
    assert layout(cli, solo, "apply", "--replication-factor", "0").code == 2
    # An invalid stage is shown as such, refused by apply (exit 1) and kept.
    assert layout(cli, solo, "remove", "n0").code == 0
    refused = layout(cli, solo, "apply")
    assert refused.code == 1
    assert "layout change refused: 0 storage node(s)" in refused.stderr
    assert len(layout(cli, solo, "show", "--json").json()["staged"]) == 1
    assert layout(cli, solo, "revert").code == 0


def test_apply_status_history_and_the_status_line(solo: NodeProcess, cli: Cli) -> None:
    assert layout(cli, solo, "revert").code == 0
    before = layout(cli, solo, "show", "--json").json()["version"]
    port = free_port()
    staged = layout(cli, solo, "assign", "n5", "-z", "", "-c", "1T", "-a", f"127.0.0.1:{port}")
    assert staged.code == 0, staged.stderr
    applied = layout(cli, solo, "apply")
    assert applied.code == 0, applied.stderr
    assert f"applied layout version {before + 1} (was {before})" in applied.stdout
    assert "trioblock layout status --watch" in applied.stderr
    # The node recorded its own address (from its config) in its role.
    assert "recorded the addresses of n0" in applied.stderr
    shown = layout(cli, solo, "show", "--json").json()
    assert shown["version"] == before + 1 and shown["staged"] == []
    assert {r["node"]: r["address"] for r in shown["roles"]} == {
        "n0": f"127.0.0.1:{solo.port}",
        "n5": f"127.0.0.1:{port}",
    }
    status = layout(cli, solo, "status", "--json")
    assert status.code == 0
    view = status.json()
    assert view["version"] == before + 1
    nodes = {n["node"]: n for n in view["nodes"]}
    assert nodes["n5"]["role"]["capacity"] == TiB
    assert nodes["n5"]["synced_version"] < before + 1  # n5 never started: not synced
    assert view["settled"] is False
    table = layout(cli, solo, "status")
    assert "n5" in table.stdout and "syncing" in table.stdout
    history = layout(cli, solo, "history", "--json").json()
    assert [r["version"] for r in history["records"]][-2:] == [before, before + 1]
    assert history["records"][-1]["live"] is True
    assert "n5" in history["records"][-1]["nodes"]
    assert "superseded" not in layout(cli, solo, "history").stdout
    line = cli("status", *solo.target)
    assert f"layout change      version {before + 1} (live:" in line.stdout
    # Undo, so that the module's other tests see a settled cluster of one again.
    assert layout(cli, solo, "remove", "n5").code == 0
    assert layout(cli, solo, "apply").code == 0


# ---------------------------------------------------------------------------------------
# join = true in the node file


def write_join_file(root: Path, body: str) -> Path:
    (root / "secret").write_text("5f" * 32 + "\n")
    config = root / "node.toml"
    config.write_text(
        'node_id = "n3"\nmetadata_dir = "meta"\ndata_dir = "data"\n'
        'rpc_secret_file = "secret"\n' + body
    )
    return config


def test_a_joining_node_file_names_its_seeds_and_not_itself(tmp_path: Path) -> None:
    config = write_join_file(
        tmp_path,
        'rpc_bind_addr = "127.0.0.1:3904"\njoin = true\n[peers]\nn0 = "127.0.0.1:3901"\n'
        'n1 = "127.0.0.1:3902"\n',
    )
    node = load_node_file(config)
    assert node.join
    assert isinstance(node.layout, trioblock.JoinCluster)
    assert node.layout.seeds == ("n0", "n1")
    assert sorted(node.peers) == ["n0", "n1"]  # not added to them
    assert node.addresses() == {
        "n0": "127.0.0.1:3901",
        "n1": "127.0.0.1:3902",
        "n3": "127.0.0.1:3904",
    }


@pytest.mark.parametrize(
    ("body", "key", "match"),
    [
        ('rpc_bind_addr = "127.0.0.1:1"\njoin = "yes"\n', "join", "true or false"),
        ('rpc_bind_addr = "127.0.0.1:1"\njoin = true\n', "peers", "naming one or more"),
        (
            'rpc_bind_addr = "127.0.0.1:1"\njoin = true\n[peers]\nn3 = "127.0.0.1:1"\n',
            "peers.n3",
            "not itself",
        ),
        ('join = true\n[peers]\nn0 = "127.0.0.1:2"\n', "rpc_bind_addr", "join = true needs"),
        (
            'rpc_bind_addr = "127.0.0.1:1"\njoin = true\nreplication_factor = 3\n'
            '[peers]\nn0 = "127.0.0.1:2"\n',
            "replication_factor",
            "from the cluster's layout",
        ),
        (
            'rpc_bind_addr = "127.0.0.1:1"\njoin = true\nwrite_quorum = 2\n'
            '[peers]\nn0 = "127.0.0.1:2"\n',
            "write_quorum",
            "from the cluster's layout",
        ),
    ],
)
def test_bad_join_files_are_refused(tmp_path: Path, body: str, key: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as caught:
        load_node_file(write_join_file(tmp_path, body))
    assert caught.value.field == key


# ---------------------------------------------------------------------------------------
# Three nodes grow to four over TCP

SETTLE_TIMEOUT = 60.0
#: Small delays: a block fetch is first retried after 2 × rpc_timeout.
CLUSTER_SETTINGS = "gc_delay = 5.0\nrpc_timeout = 2.0\n"


def poll_settled(cli: Cli, node: NodeProcess, version: int) -> dict[str, Any]:
    """``layout status --json`` until ``version`` is settled with nothing left to move."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    last: Any = None
    while time.monotonic() < deadline:
        result = cli("layout", "status", "--json", *node.target)
        assert result.code == 0, result.stderr
        last = result.json()
        if last["version"] == version and last["settled"] and last["blocks_left"] == 0:
            return dict(last)
        time.sleep(0.3)
    raise AssertionError(f"not settled within {SETTLE_TIMEOUT}s: {last}")


@pytest.mark.slow
def test_a_fourth_node_joins_through_one_member(tmp_path: Path, cli: Cli) -> None:
    ports = {f"n{i}": free_port() for i in range(4)}
    peers = "[peers]\n" + "".join(
        f'n{i} = {{ addr = "127.0.0.1:{ports[f"n{i}"]}", zone = "dc1" }}\n' for i in range(3)
    )
    with ExitStack() as stack:  # every node is stopped, whatever happens
        nodes = {
            n: stack.enter_context(
                start_node(tmp_path / n, CLUSTER_SETTINGS + peers, port=ports[n], node_id=n)
            )
            for n in ("n0", "n1", "n2")
        }
        blocks: dict[str, bytes] = {}
        for i in range(6):
            data = os.urandom(3000) + bytes([i])
            source = tmp_path / f"block{i}"
            source.write_bytes(data)
            put = cli("put", str(source), "--no-ref", "--json", *nodes[f"n{i % 3}"].target)
            assert put.code == 0, put.stderr
            h = put.json()["hash"]
            assert h == trioblock.blake2sum(data).hex()
            assert cli("ref", "add", h, f"owner-{i}", *nodes["n0"].target).code == 0
            blocks[h] = data
        # The fourth node knows one member only.
        seed = f'[peers]\nn0 = "127.0.0.1:{ports["n0"]}"\n'
        nodes["n3"] = stack.enter_context(
            start_node(
                tmp_path / "n3",
                CLUSTER_SETTINGS + "join = true\n" + seed,
                port=ports["n3"],
                node_id="n3",
            )
        )
        n0 = nodes["n0"].target
        address = f"127.0.0.1:{ports['n3']}"
        assigned = cli("layout", "assign", "n3", "-z", "dc1", "-c", "1T", "-a", address, *n0)
        assert assigned.code == 0, assigned.stderr
        assert "+ n3: zone dc1, capacity 1.0 TiB" in assigned.stdout
        applied = cli("layout", "apply", *n0)
        assert applied.code == 0, applied.stderr
        assert "applied layout version 2" in applied.stdout
        status = poll_settled(cli, nodes["n3"], 2)
        assert {n["node"]: n["synced_version"] for n in status["nodes"]} == {
            "n0": 2,
            "n1": 2,
            "n2": 2,
            "n3": 2,
        }
        watched = cli("layout", "status", "--watch", "--interval", "0.2", *n0)
        assert watched.code == 0, watched.stderr
        assert "n3 is synced to layout version 2" in watched.stderr
        assert ": settled" in watched.stdout
        for h, data in blocks.items():
            for name, node in nodes.items():
                copy = tmp_path / f"{name}-{h}"
                got = cli("get", h, "-o", str(copy), *node.target)
                assert got.code == 0, f"{name}: {got.stderr}"
                assert copy.read_bytes() == data, name
        held = cli("status", "--json", *nodes["n3"].target).json()["stored"]["blocks"]
        assert held > 0  # n3 took its share of the copies


# ---------------------------------------------------------------------------------------
# --watch, against a scripted node


def fake_status(version: int, settled: bool, left: int, n1: dict[str, Any]) -> dict[str, Any]:
    role = {"zone": "dc1", "capacity": TiB, "address": None}
    n0 = {
        "node": "n0",
        "role": role,
        "synced_version": version,
        "drained": False,
        "blocks_to_fetch": 0,
        "blocks_to_hand_off": left,
        "bytes_to_move": 100 * left,
    }
    return {
        "node_id": "n0",
        "version": version,
        "live_versions": [version] if settled else [version - 1, version],
        "settled": settled,
        "blocks_left": left,
        "bytes_to_move": 100 * left,
        "total_nodes": 2,
        "nodes": [n0, {"node": "n1", **n1}],
        "next": None,
        "now": 0,
    }


class ScriptedNode:
    """Answers ``layout_status`` with the next status of a script (then the last)."""

    def __init__(self, statuses: list[dict[str, Any]]) -> None:
        self.statuses = statuses
        self.calls = 0

    async def call(self, op: str, **args: Any) -> dict[str, Any]:
        assert op == "layout_status"
        status = self.statuses[min(self.calls, len(self.statuses) - 1)]
        self.calls += 1
        return dict(status)


async def test_watch_polls_until_settled_and_nothing_is_left(
    autojump_clock: trio.testing.MockClock,
) -> None:
    draining = {
        "role": None,
        "synced_version": 1,
        "drained": False,
        "blocks_to_fetch": 0,
        "blocks_to_hand_off": 5,
        "bytes_to_move": 500,
    }
    drained = {**draining, "drained": True, "blocks_to_hand_off": 0, "bytes_to_move": 0}
    node = ScriptedNode(
        [
            fake_status(2, False, 7, draining),
            fake_status(2, False, 7, draining),
            fake_status(2, True, 2, drained),  # settled, surplus copies still to hand off
            fake_status(2, True, 0, drained),
        ]
    )
    said: list[str] = []
    last = await watch_status(node, Output(), 0.5, say=said.append)  # type: ignore[arg-type]
    assert node.calls == 4
    assert last["settled"] and last["blocks_left"] == 0
    assert said == ["n0 is synced to layout version 2", "n1 is drained: it may be switched off"]


def test_a_node_without_peers_has_a_fixed_layout(node: NodeProcess, cli: Cli) -> None:
    line = cli("status", *node.target)
    assert "layout change      none: this node's layout is fixed" in line.stdout
    shown = cli("layout", "show", "--json", *node.target).json()
    assert shown["fixed"] is True and shown["version"] == 1
    refused = cli("layout", "assign", "n9", "-z", "a", "-c", "1T", *node.target)
    assert refused.code == 1
    assert "is fixed" in refused.stderr
