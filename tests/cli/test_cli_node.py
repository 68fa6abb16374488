"""The ``trioblock`` client commands against a real ``trioblock serve`` on loopback.

One node process serves the whole module; each test uses blocks of its own. Commands run
as true subprocesses where the process boundary matters (exit codes, stdout bytes,
authentication) and in-process (``cli``) elsewhere, to keep the suite fast.
"""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cli_kit import NodeProcess, Result, cli_env, free_port, run_cli, run_cli_bytes

from trioblock import blake2sum

Cli = Callable[..., Result]
#: Bounded wait for the node's resync worker to record a failure.
ERROR_DEADLINE = 15.0


def block_path(data_dir: Path, hex_hash: str) -> Path:
    return data_dir / hex_hash[:2] / hex_hash[2:4] / (hex_hash + ".zst")


def put(cli: Cli, node: NodeProcess, path: Path) -> str:
    result = cli("put", str(path), "--json", *node.target)
    assert result.code == 0, result.stderr
    reply: dict[str, Any] = result.json()
    return str(reply["hash"])


# ---------------------------------------------------------------------------------------
# Subprocesses


def test_status_json_describes_the_node(node: NodeProcess) -> None:
    result = run_cli("status", "--json", *node.target)
    assert result.code == 0, result.stderr
    status = result.json()
    assert status["node_id"] == "n0"
    assert status["layout"]["nodes"] == ["n0"]
    assert status["data_dirs"][0]["path"] == str(node.data_dir)
    assert {"rc_len", "resync_queue_len", "resync_errors_len", "scrub", "metrics"} <= set(status)


def test_status_table_is_readable_text(node: NodeProcess, cli: Cli) -> None:
    result = cli("status", *node.target)
    assert result.code == 0, result.stderr
    assert "n0" in result.stdout
    assert "data directories" in result.stdout
    assert str(node.data_dir) in result.stdout


def test_put_then_get_round_trips_a_block_larger_than_a_frame(
    node: NodeProcess, tmp_path: Path
) -> None:
    data = os.urandom(300_000)  # far more than one 64 KiB message frame holds
    source = tmp_path / "in.bin"
    source.write_bytes(data)
    put_result = run_cli("put", str(source), *node.target)
    assert put_result.code == 0, put_result.stderr
    h = put_result.stdout.strip()
    assert h == blake2sum(data).hex()

    code, out, err = run_cli_bytes("get", h, *node.target)
    assert code == 0, err
    assert out == data


def test_get_to_a_file_reports_json(node: NodeProcess, cli: Cli, tmp_path: Path) -> None:
    data = os.urandom(100_000)
    source = tmp_path / "in.bin"
    source.write_bytes(data)
    h = put(cli, node, source)
    target = tmp_path / "out.bin"
    got = cli("get", h, "-o", str(target), "--json", *node.target)
    assert got.code == 0, got.stderr
    assert got.json() == {"hash": h, "size": len(data), "path": str(target)}
    assert target.read_bytes() == data


def test_put_reads_stdin(node: NodeProcess) -> None:
    data = b"from a pipe\n" * 1000
    result = run_cli("put", "-", "--json", *node.target, stdin=data)
    assert result.code == 0, result.stderr
    assert result.json()["hash"] == blake2sum(data).hex()
    assert result.json()["refcount"] >= 1


def test_wrong_secret_exits_3_with_a_clear_message(
    node: NodeProcess, cli: Cli, tmp_path: Path
) -> None:
    wrong = tmp_path / "wrong-secret"
    wrong.write_text("not the cluster secret")
    result = run_cli("status", *node.target, "--secret-file", str(wrong))
    assert result.code == 3
    assert "authentication" in result.stderr
    assert "secret" in result.stderr
    assert result.stdout == ""
    # The node is unharmed.
    assert cli("status", "--json", *node.target).code == 0


def test_secret_from_environment_and_node_id_asked_of_the_node(node: NodeProcess) -> None:
    env = cli_env() | {"TRIOBLOCK_SECRET": node.secret_file.read_text().strip()}
    result = run_cli("workers", "--json", "--node", f"127.0.0.1:{node.port}", env=env)
    assert result.code == 0, result.stderr
    assert {w["name"] for w in result.json()} >= {"resync-0", "scrub"}


def test_get_of_an_unknown_block_exits_1(node: NodeProcess) -> None:
    code, out, err = run_cli_bytes("get", "ab" * 32, *node.target)
    assert code == 1
    assert out == b""
    assert "not found" in err


def test_scrub_start_runs_to_completion_and_status_shows_it(
    node: NodeProcess, cli: Cli, tmp_path: Path
) -> None:
    source = tmp_path / "scrubbed.bin"
    source.write_bytes(b"scrub me " * 5000)
    put(cli, node, source)
    result = run_cli("scrub", "start", "--json", "--interval", "0.05", *node.target)
    assert result.code == 0, result.stderr
    scrub = result.json()
    assert scrub["state"] == "finished"
    assert scrub["blocks_checked"] >= 1
    status = cli("status", "--json", *node.target).json()
    assert status["scrub"]["state"] == "finished"
    assert status["scrub"]["last_completed"] == scrub["last_completed"]


def test_metrics_endpoint_serves_prometheus_text(node: NodeProcess) -> None:
    with urllib.request.urlopen(node.metrics_url, timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    for name in (
        'trioblock_node_info{node_id="n0"} 1.0',
        "trioblock_bytes_written_total",
        "trioblock_resync_queue_length",
        "trioblock_resync_error_blocks",
        "trioblock_write_duration_seconds_count",
        'trioblock_worker_state{state="idle",worker="scrub"}',
        "trioblock_worker_errors_total",
        "trioblock_scrub_progress",
        "trioblock_rpc_connections_accepted_total",
        "trioblock_data_dir_free_bytes",
    ):
        assert name in text, name
    missing = node.metrics_url.replace("/metrics", "/nope")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(missing, timeout=10)
    assert info.value.code == 404
    info.value.close()


# ---------------------------------------------------------------------------------------
# In-process commands (the node is still a real process)


def test_workers_table_lists_every_worker(node: NodeProcess, cli: Cli) -> None:
    result = cli("workers", *node.target)
    assert result.code == 0, result.stderr
    assert "resync-0" in result.stdout
    assert "scrub" in result.stdout


def test_malformed_hash_is_a_usage_error(node: NodeProcess, cli: Cli) -> None:
    assert cli("get", "xyz", *node.target).code == 2
    assert cli("retry-now", "12", *node.target).code == 2


def test_usage_and_config_errors_exit_2(cli: Cli, tmp_path: Path) -> None:
    assert cli().code == 2
    assert cli("status").code == 2  # which node?
    bad = tmp_path / "bad.toml"
    bad.write_text('node_id = "n0"\nbogus = 1\n')
    result = cli("status", "--config", str(bad))
    assert result.code == 2
    assert "bogus" in result.stderr
    assert cli("serve", "--config", str(tmp_path / "missing.toml")).code == 2


def test_unreachable_node_exits_3(cli: Cli, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cret")
    port = str(free_port())  # nothing listens there
    result = cli("status", "--node", f"127.0.0.1:{port}", "--secret-file", str(secret))
    assert result.code == 3
    assert "cannot reach" in result.stderr


def test_corrupt_block_is_found_listed_retried_and_purged(
    node: NodeProcess, cli: Cli, tmp_path: Path
) -> None:
    source = tmp_path / "victim.bin"
    source.write_bytes(os.urandom(20_000))
    h = put(cli, node, source)
    path = block_path(node.data_dir, h)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))

    scrub = cli("scrub", "start", "--json", "--interval", "0.05", *node.target)
    assert scrub.code == 0, scrub.stderr
    assert scrub.json()["corruptions_found"] >= 1
    assert path.with_name(path.name + ".corrupted").exists()

    # The resync of the quarantined block fails at once (no other node has it); poll the
    # node's error list with a bounded deadline.
    deadline = time.monotonic() + ERROR_DEADLINE
    while True:
        listed = cli("errors", "--json", *node.target)
        assert listed.code == 0, listed.stderr
        hashes = [e["hash"] for e in listed.json()["errors"]]
        if h in hashes or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert h in hashes
    table = cli("errors", *node.target)
    assert h in table.stdout

    assert cli("retry-now", h, *node.target).code == 0
    assert cli("retry-now", "cd" * 32, *node.target).code == 1  # was not in error
    assert cli("retry-now", "--all", "--json", *node.target).code == 0

    assert cli("purge", h, *node.target).code == 2  # needs --yes
    purged = cli("purge", h, "--yes", "--json", *node.target)
    assert purged.code == 0, purged.stderr
    assert purged.json()["known"] is True
    assert purged.json()["refcount"] >= 1
    assert h not in [e["hash"] for e in cli("errors", "--json", *node.target).json()["errors"]]
    assert cli("purge", h, "--yes", *node.target).code == 1  # nothing left to purge


def test_scrub_controls(node: NodeProcess, cli: Cli, tmp_path: Path) -> None:
    for i in range(3):
        source = tmp_path / f"slow-{i}.bin"
        source.write_bytes(b"scrub slowly %d " % i * 1000)
        put(cli, node, source)
    assert cli("scrub", "pause", "soon", *node.target).code == 2
    # Nothing is paused: there is nothing to resume.
    assert cli("scrub", "status", "--json", *node.target).json()["state"] in ("finished", "idle")
    assert cli("scrub", "resume", *node.target).code == 1
    # A high tranquility makes the scrub sleep ~seconds after its first block, so the
    # commands below find it running.
    tranquility = cli("scrub", "tranquility", "1000", "--json", *node.target)
    assert tranquility.code == 0, tranquility.stderr
    assert tranquility.json()["tranquility"] == 1000
    try:
        started = cli("scrub", "start", "--detach", "--json", *node.target)
        assert started.code == 0, started.stderr
        assert started.json()["state"] == "running"
        paused = cli("scrub", "pause", "1h30m", "--json", *node.target)
        assert paused.json()["state"] == "paused"
        assert paused.json()["paused_until"] is not None
        resumed = cli("scrub", "resume", "--detach", "--json", *node.target)
        assert resumed.code == 0, resumed.stderr
        assert resumed.json()["state"] == "running"
        cancelled = cli("scrub", "cancel", "--json", *node.target)
        assert cancelled.code == 0
        assert cancelled.json()["state"] in ("finished", "idle")
    finally:
        assert cli("scrub", "tranquility", "0", *node.target).code == 0


def test_repair_and_rebalance_run_to_completion(node: NodeProcess, cli: Cli) -> None:
    repair = cli("repair", "--json", "--interval", "0.05", *node.target)
    assert repair.code == 0, repair.stderr
    view = repair.json()
    assert view["state"] == "done"
    assert view["report"]["rc_blocks"] >= 1
    rebalance = cli("rebalance", "--interval", "0.05", *node.target)
    assert rebalance.code == 0, rebalance.stderr
    assert "rebalance done" in rebalance.stdout


def test_set_resync_changes_workers(node: NodeProcess, cli: Cli) -> None:
    result = cli("set-resync", "--workers", "2", "--json", *node.target)
    assert result.code == 0, result.stderr
    assert result.json()["workers"] == 2
    assert cli("set-resync", "--workers", "9", *node.target).code == 1  # refused by the node
    assert cli("set-resync", "--workers", "1", *node.target).code == 0
