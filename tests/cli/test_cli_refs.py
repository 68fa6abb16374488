"""``trioblock ref add|remove|list|sync`` and the reference figures of ``status``,
``workers`` and the metrics, against real ``trioblock serve`` processes on loopback."""

from __future__ import annotations

import os
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from cli_kit import NodeProcess, Result, free_port, run_cli, start_node

from trioblock import blake2sum

Cli = Callable[..., Result]


def new_hash() -> str:
    return blake2sum(os.urandom(32)).hex()


def refs_of(cli: Cli, node: NodeProcess, h: str) -> dict[str, object]:
    result = cli("ref", "list", h, "--json", *node.target)
    assert result.code == 0, result.stderr
    listing: dict[str, object] = result.json()
    return listing


# ---------------------------------------------------------------------------------------
# One node


def test_add_list_remove_a_reference(node: NodeProcess, cli: Cli) -> None:
    h = new_hash()
    added = run_cli("ref", "add", h, "backup-2024-06-01", *node.target)
    assert added.code == 0, added.stderr
    assert f"reference of backup-2024-06-01 to {h} added" in added.stdout
    # The block was never put: recorded all the same, with a warning to put it.
    assert f"no storage node that recorded the reference holds block {h}" in added.stderr

    listing = refs_of(cli, node, h)
    assert listing["refcount"] == 1
    assert listing["alive"] == 1
    [entry] = listing["references"]  # type: ignore[misc]
    assert entry["owner"] == "backup-2024-06-01"
    assert entry["owner_hex"] == b"backup-2024-06-01".hex()
    assert entry["deleted"] is False

    again = cli("ref", "add", h, "backup-2024-06-01", *node.target)  # idempotent
    assert again.code == 0, again.stderr
    assert refs_of(cli, node, h)["refcount"] == 1

    table = cli("ref", "list", h, *node.target)
    assert table.code == 0
    assert "backup-2024-06-01" in table.stdout
    assert "alive" in table.stdout

    removed = cli("ref", "remove", h, "backup-2024-06-01", "--json", *node.target)
    assert removed.code == 0, removed.stderr
    assert removed.json()["local"]["deleted"] is True
    listing = refs_of(cli, node, h)
    assert listing["refcount"] == 0
    assert listing["alive"] == 0
    assert [e["deleted"] for e in listing["references"]] == [True]  # type: ignore[attr-defined]


def test_a_removed_reference_stays_removed(node: NodeProcess, cli: Cli) -> None:
    h = new_hash()
    assert cli("ref", "remove", h, "never-added", *node.target).code == 0  # a tombstone
    result = run_cli("ref", "add", h, "never-added", *node.target)
    assert result.code == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert "removed earlier" in result.stderr
    assert refs_of(cli, node, h)["refcount"] == 0


def test_owners_in_hex_and_binary_owners_are_shown_in_hex(node: NodeProcess, cli: Cli) -> None:
    h = new_hash()
    assert cli("ref", "add", h, "00ff10", "--hex", *node.target).code == 0
    assert cli("ref", "add", h, "caf\u00e9", *node.target).code == 0
    listing = refs_of(cli, node, h)
    owners = {e["owner_hex"]: e["owner"] for e in listing["references"]}  # type: ignore[attr-defined]
    assert owners == {"00ff10": None, "caf\u00e9".encode().hex(): "caf\u00e9"}
    table = cli("ref", "list", h, *node.target)
    assert "0x00ff10" in table.stdout
    assert "caf\u00e9" in table.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["add", "abc", "o"], "not a block hash"),
        (["add", "ab" * 32, ""], "1..128 bytes"),
        (["remove", "ab" * 32, "x" * 129], "1..128 bytes"),
        (["add", "ab" * 32, "zz", "--hex"], "not hex"),
        (["list", "not-a-hash"], "not a block hash"),
    ],
)
def test_bad_hashes_and_owners_are_usage_errors(
    node: NodeProcess, cli: Cli, args: list[str], message: str
) -> None:
    result = cli("ref", *args, *node.target)
    assert result.code == 2
    assert message in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr


def test_listing_a_block_without_references_fails(node: NodeProcess, cli: Cli) -> None:
    result = cli("ref", "list", new_hash(), *node.target)
    assert result.code == 1
    assert "holds no reference" in result.stderr


def test_many_owners_are_listed_across_pages(node: NodeProcess, cli: Cli) -> None:
    h = new_hash()
    owners = [f"{'o' * 100}-{i:03d}" for i in range(230)]  # more than two reply pages
    with ExitStack():
        for owner in owners:
            assert cli("ref", "add", h, owner, *node.target).code == 0
    listing = refs_of(cli, node, h)
    assert [e["owner"] for e in listing["references"]] == owners  # type: ignore[attr-defined]
    assert listing["refcount"] == len(owners)


def test_sync_runs_a_pass_and_reports_it(node: NodeProcess, cli: Cli) -> None:
    result = cli("ref", "sync", "--json", *node.target)
    assert result.code == 0, result.stderr
    report = result.json()
    assert set(report) == {"pulled", "pushed", "collected", "missing", "failed", "handed_off"}
    assert report["failed"] == {}
    table = cli("ref", "sync", *node.target)
    assert table.code == 0
    assert "entries pulled" in table.stdout
    assert "entries handed off" in table.stdout


def test_status_workers_and_metrics_show_references_and_stored_blocks(
    node: NodeProcess, cli: Cli, tmp_path: Path
) -> None:
    h = new_hash()
    assert cli("ref", "add", h, "status-check", *node.target).code == 0
    data = os.urandom(10_000)
    source = tmp_path / "block.bin"
    source.write_bytes(data)
    assert cli("put", str(source), *node.target).code == 0
    assert cli("ref", "sync", *node.target).code == 0

    status = cli("status", "--json", *node.target).json()
    assert status["ref_len"] >= 1
    stored = status["stored"]
    assert stored["blocks"] >= 1
    assert stored["bytes"] > 0
    table = cli("status", *node.target).stdout
    assert "reference" in table
    assert f"{stored['blocks']} block" in table

    workers = cli("workers", "--json", *node.target).json()
    [ref_sync] = [w for w in workers if w["name"] == "ref-sync"]
    assert ref_sync["queue_length"] == status["ref_len"]
    text = cli("workers", *node.target).stdout
    assert "ref-sync" in text
    assert "reference entr" in text
    assert "last pass" in text

    with urllib.request.urlopen(node.metrics_url, timeout=10) as response:
        metrics = response.read().decode()
    values = {
        line.split()[0]: float(line.split()[1])
        for line in metrics.splitlines()
        if line and not line.startswith("#")
    }
    assert values["trioblock_ref_entries"] >= 1
    assert values["trioblock_ref_sync_passes_total"] >= 1
    assert "trioblock_ref_entries_pulled_total" in values
    assert "trioblock_ref_tombstones_collected_total" in values
    assert "trioblock_ref_missing_queued_total" in values
    assert values["trioblock_stored_blocks"] >= 1
    assert values["trioblock_stored_bytes"] > 0


# ---------------------------------------------------------------------------------------
# Peers that cannot be reached: no quorum


@pytest.fixture(scope="module")
def lonely(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """n0 of a 3-node cluster whose other nodes never started."""
    extra = "\n".join(
        [
            "replication_factor = 3",
            "rpc_timeout = 2.0",
            "[peers]",
            f'n1 = "127.0.0.1:{free_port()}"',
            f'n2 = "127.0.0.1:{free_port()}"',
        ]
    )
    with start_node(tmp_path_factory.mktemp("lonely"), extra) as running:
        yield running


def test_no_write_quorum_is_one_line_and_exit_1(lonely: NodeProcess) -> None:
    result = run_cli("ref", "add", new_hash(), "owner", *lonely.target)
    assert result.code == 1, result.stdout
    assert "quorum" in result.stderr.lower()
    assert result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr


def test_sync_with_unreachable_peers_names_them_and_exits_1(lonely: NodeProcess) -> None:
    result = run_cli("ref", "sync", *lonely.target)
    assert result.code == 1
    assert "n1" in result.stderr
    assert "n2" in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    as_json = run_cli("ref", "sync", "--json", *lonely.target)
    assert as_json.code == 1
    assert set(as_json.json()["failed"]) == {"n1", "n2"}


# ---------------------------------------------------------------------------------------
# Two nodes: a reference taken through one is counted on the other


def test_a_reference_added_through_one_node_is_counted_on_the_other(
    tmp_path: Path, cli: Cli
) -> None:
    ports = {"n0": free_port(), "n1": free_port()}
    peers = "\n".join(["[peers]", *(f'{n} = "127.0.0.1:{p}"' for n, p in ports.items())])
    extra = "replication_factor = 2\n" + peers
    with ExitStack() as stack:
        nodes = {
            n: stack.enter_context(start_node(tmp_path / n, extra, port=p, node_id=n))
            for n, p in ports.items()
        }
        h = new_hash()
        added = cli("ref", "add", h, "snapshot-1", *nodes["n0"].target)
        assert added.code == 0, added.stderr
        deadline = time.monotonic() + 15
        while True:  # the quorum is both nodes: n1 holds it on return already
            listing = refs_of(cli, nodes["n1"], h)
            if listing["refcount"] == 1 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert listing["refcount"] == 1
        removed = cli("ref", "remove", h, "snapshot-1", *nodes["n1"].target)
        assert removed.code == 0, removed.stderr
        assert refs_of(cli, nodes["n0"], h)["refcount"] == 0
        synced = cli("ref", "sync", "--json", *nodes["n0"].target)
        assert synced.code == 0, synced.stderr
        assert synced.json()["failed"] == {}
