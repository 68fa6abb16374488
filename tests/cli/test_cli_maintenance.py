"""``trioblock block info``, ``repair refcounts``, ``stats`` and ``meta snapshot|list|
restore`` against real ``trioblock serve`` processes on loopback, and a damaged database
at ``serve`` start-up."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from cli_kit import NodeProcess, Result, free_port, run_cli, start_node, write_node_files

from trioblock import blake2sum

Cli = Callable[..., Result]


def put(cli: Cli, node: NodeProcess, tmp_path: Path, data: bytes, *, incref: bool = False) -> str:
    src = tmp_path / f"block-{blake2sum(data).hex()[:8]}"
    src.write_bytes(data)
    flags = () if incref else ("--no-ref",)
    result = cli("put", str(src), "--json", *flags, *node.target)
    assert result.code == 0, result.stderr
    h: str = result.json()["hash"]
    return h


def test_block_info_shows_what_the_node_holds(node: NodeProcess, cli: Cli, tmp_path: Path) -> None:
    h = put(cli, node, tmp_path, os.urandom(5000))
    assert cli("ref", "add", h, "snap-1", *node.target).code == 0
    assert cli("ref", "add", h, "snap-2", *node.target).code == 0
    assert cli("ref", "remove", h, "snap-1", *node.target).code == 0
    shown = cli("block", "info", h, *node.target)
    assert shown.code == 0, shown.stderr
    for text in ("1 (present)", "1 alive, 1 removed", "snap-1", "snap-2", "compressed", "n0"):
        assert text in shown.stdout, shown.stdout
    as_json = cli("block", "info", h, "--json", *node.target)
    view = as_json.json()["nodes"]["n0"]
    assert (view["refcount"], view["state"], view["references_alive"]) == (1, "present", 1)
    [copy] = view["copies"]
    assert Path(copy["path"]).is_file() and copy["size"] == Path(copy["path"]).stat().st_size
    assert [r["owner"] for r in view["references"]] == ["snap-1", "snap-2"]


def test_block_info_of_an_unknown_block_fails(node: NodeProcess, cli: Cli) -> None:
    h = blake2sum(os.urandom(32)).hex()
    shown = cli("block", "info", h, *node.target)
    assert shown.code == 1 and f"holds anything about block {h}" in shown.stderr
    bad = cli("block", "info", "xyz", *node.target)
    assert bad.code == 2 and "64 hex digits" in bad.stderr


def test_repair_refcounts_reports_what_it_fixed(
    node: NodeProcess, cli: Cli, tmp_path: Path
) -> None:
    # ``put`` takes a local count (without --no-ref): with a reference on top, a drift.
    h = put(cli, node, tmp_path, os.urandom(3000), incref=True)
    assert cli("ref", "add", h, "owner", *node.target).code == 0
    before = cli("block", "info", h, "--json", *node.target).json()["nodes"]["n0"]
    assert before["refcount"] == 2
    repaired = cli("repair", "refcounts", *node.target)
    assert repaired.code == 0, repaired.stderr
    assert "refcounts done" in repaired.stdout and h in repaired.stdout
    after = cli("block", "info", h, "--json", *node.target).json()["nodes"]["n0"]
    assert after["refcount"] == 1
    again = cli("repair", "refcounts", "--json", *node.target)
    report = again.json()["report"]
    assert again.code == 0 and report["changes"] == [] and report["blocks_checked"] >= 1


def test_stats_of_one_node(node: NodeProcess, cli: Cli, tmp_path: Path) -> None:
    put(cli, node, tmp_path, os.urandom(2000))
    shown = cli("stats", *node.target)
    assert shown.code == 0, shown.stderr
    assert "usable data capacity" in shown.stdout and "n0" in shown.stdout
    stats = cli("stats", "--json", *node.target).json()
    n0 = stats["nodes"]["n0"]
    assert n0["blocks"] >= 1 and n0["metadata_dir"]["free"] > 0
    assert stats["replication_factor"] == 1 and stats["complete"]
    assert stats["usable_data"] > 0


def test_snapshot_list_and_restore(tmp_path: Path, cli: Cli) -> None:
    with start_node(tmp_path / "n0", "metadata_snapshots_kept = 2") as running:
        h = put(cli, running, tmp_path, os.urandom(4000))
        assert cli("ref", "add", h, "kept", *running.target).code == 0
        for _ in range(3):
            taken = cli("meta", "snapshot", "--json", *running.target)
            assert taken.code == 0, taken.stderr
            time.sleep(0.01)
        assert len(taken.json()["kept"]) == 2
        listing = cli("meta", "list", "--json", *running.target).json()["snapshots"]
        assert [s["path"] for s in listing] == [s["path"] for s in taken.json()["kept"]]
        assert cli("ref", "add", h, "lost", *running.target).code == 0
        refused = run_cli("meta", "restore", "--config", str(running.config))
        assert refused.code == 1 and "stop the node" in refused.stderr, refused.stderr
    # The node is stopped: its database is damaged, and serve refuses it in one line.
    db = tmp_path / "n0" / "meta" / "trioblock.sqlite"
    db.write_bytes(b"this is not a database" * 500)
    port = free_port()
    config, _secret = write_node_files(tmp_path / "n0", port, "metadata_snapshots_kept = 2")
    served = run_cli("serve", "--config", str(config))
    assert served.code == 1, served.stderr
    assert "damaged" in served.stderr and "trioblock meta restore" in served.stderr
    assert "Traceback" not in served.stderr

    restored = run_cli("meta", "restore", "--config", str(config))
    assert restored.code == 0, restored.stderr
    assert "restored" in restored.stdout and "moved aside" in restored.stderr
    with start_node(tmp_path / "n0", "metadata_snapshots_kept = 2", port=port) as running:
        listing = cli("ref", "list", h, "--json", *running.target)
        assert [r["owner"] for r in listing.json()["references"]] == ["kept"]


def test_restore_without_snapshots_or_config(tmp_path: Path) -> None:
    config, _secret = write_node_files(tmp_path, free_port())
    nothing = run_cli("meta", "restore", "--config", str(config))
    assert nothing.code == 1 and "no snapshot" in nothing.stderr
    missing = run_cli("meta", "restore", "--config", str(tmp_path / "nope.toml"))
    assert missing.code == 2


def test_block_info_and_stats_across_two_nodes(tmp_path: Path, cli: Cli) -> None:
    ports = {"n0": free_port(), "n1": free_port()}
    peers = "\n".join(["[peers]", *(f'{n} = "127.0.0.1:{p}"' for n, p in ports.items())])
    extra = "replication_factor = 2\n" + peers
    with ExitStack() as stack:
        nodes = {
            n: stack.enter_context(start_node(tmp_path / n, extra, port=p, node_id=n))
            for n, p in ports.items()
        }
        h = put(cli, nodes["n0"], tmp_path, os.urandom(6000))
        assert cli("ref", "add", h, "both", *nodes["n0"].target).code == 0
        shown = cli("block", "info", h, "--cluster", *nodes["n1"].target)
        assert shown.code == 0, shown.stderr
        assert "every storage node" in shown.stdout and "both" in shown.stdout
        views = cli("block", "info", h, "--cluster", "--json", *nodes["n1"].target).json()
        assert set(views["nodes"]) == {"n0", "n1"}
        assert all(v["refcount"] == 1 and len(v["copies"]) == 1 for v in views["nodes"].values())
        stats = cli("stats", "--json", *nodes["n1"].target).json()
        assert set(stats["nodes"]) == {"n0", "n1"} and stats["replication_factor"] == 2
        nodes["n0"].stop()
        partial = cli("stats", *nodes["n1"].target)
        assert partial.code == 0 and "node n0 could not be asked" in partial.stderr
        cluster_view = cli("block", "info", h, "--cluster", "--json", *nodes["n1"].target)
        assert "error" in cluster_view.json()["nodes"]["n0"]
