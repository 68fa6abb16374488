"""``trioblock serve``: start-up, readiness line and clean shutdown on SIGINT / SIGTERM."""

from __future__ import annotations

import signal
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
from cli_kit import Result, start_node, write_node_files


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_stops_the_node_cleanly(tmp_path: Path, sig: signal.Signals) -> None:
    with start_node(tmp_path) as node:
        assert node.stop(sig) == 0
        assert node.next_line(timeout=5) == "trioblock node n0 stopped"
        assert node.next_line(timeout=5) is None
        assert f"received {sig.name}: shutting down" in node.stderr()
        assert "Traceback" not in node.stderr()
    # Nothing half-written is left in the data directory, and the database was closed
    # (SQLite removes the WAL file when the last connection closes cleanly).
    assert not [p for p in (tmp_path / "data").rglob("*") if ".tmp" in p.name]
    assert not (tmp_path / "meta" / "trioblock.sqlite-wal").exists()


def test_a_port_in_use_fails_with_exit_1(cli: Callable[..., Result], tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        config, _secret = write_node_files(tmp_path, taken.getsockname()[1])
        result = cli("serve", "--config", str(config))
    assert result.code == 1
    assert "cannot listen" in result.stderr
