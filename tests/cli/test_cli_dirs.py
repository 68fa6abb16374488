"""Full and failing data directories at the edges: ``status`` (text and JSON), the
``data_dir_clear`` admin op and ``trioblock dir clear``, the Prometheus gauges."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cli_kit import NodeProcess, Result, run_cli

import trioblock
from trioblock import DataDir
from trioblock._cli.admin_service import AdminRequestError, answer_admin
from trioblock._cli.metrics_http import registry_for, render_metrics
from trioblock._cli.output import Output
from trioblock._cli.reports import render_status
from trioblock.testing import SimulatedDisk

Cli = Callable[..., Result]


async def test_a_failing_directory_shows_in_status_and_metrics_until_cleared(
    tmp_path: Path,
    autojump_clock: object,
    no_livelock: Callable[[], Any],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # table cells unwrapped
    a, b = tmp_path / "a", tmp_path / "b"
    disk = SimulatedDisk()
    config = trioblock.Config(
        node_id="n1",
        metadata_dir=tmp_path / "meta",
        data_dir=[DataDir(a, capacity=1), DataDir(b, capacity=1)],
        disk=disk,
    )
    with no_livelock():
        async with trioblock.open_block_manager(config) as bm:
            disk.fail("write", root=a, times=None)
            for i in range(12):
                await bm.put_block(b"block %d " % i * 100)
            status = await answer_admin(bm, {"op": "status"})
            assert isinstance(status, dict)
            dirs = {d["path"]: d for d in status["data_dirs"]}
            assert dirs[str(a)]["state"] == "failing"
            assert dirs[str(a)]["errors"] == 3
            assert "Input/output error" in dirs[str(a)]["last_error"]
            assert dirs[str(b)]["state"] == "ok"
            render_status(Output(), status)
            shown = capsys.readouterr()
            assert "failing (3 errors)" in shown.out
            assert f"{a} is failing" in shown.err and "trioblock dir clear" in shown.err

            text = (await render_metrics(bm, *registry_for(bm))).decode()
            assert f'trioblock_data_dir_state{{path="{a}",state="failing"}} 1.0' in text
            assert f'trioblock_data_dir_state{{path="{a}",state="ok"}} 0.0' in text
            assert f'trioblock_data_dir_state{{path="{b}",state="ok"}} 1.0' in text
            assert f'trioblock_data_dir_errors{{path="{a}"}} 3.0' in text

            with pytest.raises(AdminRequestError, match="not a data directory"):
                await answer_admin(bm, {"op": "data_dir_clear", "path": str(tmp_path)})
            with pytest.raises(AdminRequestError, match="needs a 'path'"):
                await answer_admin(bm, {"op": "data_dir_clear"})
            disk.clear_faults()
            reply = await answer_admin(bm, {"op": "data_dir_clear", "path": str(a)})
            assert reply == {"path": str(a), "was": "failing", "state": "ok"}
            text = (await render_metrics(bm, *registry_for(bm))).decode()
            assert f'trioblock_data_dir_state{{path="{a}",state="ok"}} 1.0' in text


def test_status_shows_each_directory_state(node: NodeProcess, cli: Cli) -> None:
    result = run_cli("status", "--json", *node.target)
    assert result.code == 0, result.stderr
    (entry,) = result.json()["data_dirs"]
    assert entry["state"] == "ok"
    assert entry["errors"] == 0
    text = cli("status", *node.target)
    assert text.code == 0, text.stderr
    assert "state" in text.stdout


def test_dir_clear_names_what_it_did_and_refuses_an_unknown_directory(
    node: NodeProcess, cli: Cli, tmp_path: Path
) -> None:
    result = cli("dir", "clear", str(node.data_dir), *node.target)
    assert result.code == 0, result.stderr
    assert "was ok already" in result.stdout
    result = run_cli("dir", "clear", str(node.data_dir), "--json", *node.target)
    assert result.json() == {"path": str(node.data_dir), "was": "ok", "state": "ok"}
    result = cli("dir", "clear", str(tmp_path), *node.target)
    assert result.code == 1
    assert "not a data directory" in result.stderr
