"""``trioblock --version`` and the demo's narration."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable

import pytest
from cli_kit import Result, cli_env

import trioblock

Cli = Callable[..., Result]


def test_version(cli: Cli) -> None:
    result = cli("--version")
    assert result.code == 0
    assert result.stdout.strip() == f"trioblock {trioblock.__version__}"


def test_the_demo_tells_one_consistent_story_about_a_retry() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "trioblock", "demo", "--blocks", "4"],
        capture_output=True,
        text=True,
        timeout=120,
        env=cli_env(),
    )
    assert done.returncode == 0, done.stderr
    # The node logs "at t=+A: ... next try in Bs"; the demo must then announce t=+(A+B).
    failures = re.findall(r"t=\+([\d.]+)s trioblock\.resync .*next try in (\d+)s", done.stderr)
    announced = re.findall(r"trioblock\.demo .*next try at t=\+([\d.]+)s", done.stderr)
    assert failures, done.stderr
    assert len(announced) == 1, done.stderr
    at, delay = failures[-1]
    assert float(announced[0]) == float(at) + int(delay)


@pytest.mark.parametrize(
    ("argv", "before", "after"),
    [
        (["status", "-v"], 0, 1),
        (["-v", "status"], 1, 0),
        (["-v", "status", "--verbose", "-v"], 1, 2),
        (["ref", "-v", "list", "00" * 32], 0, 1),
    ],
)
def test_verbose_is_taken_before_or_after_the_command(
    argv: list[str], before: int, after: int
) -> None:
    from trioblock._cli.main import build_parser

    args = build_parser().parse_args(argv)
    assert (args.verbose, args.command_verbose) == (before, after)


def test_tables_in_a_pipe_have_no_trailing_spaces(capsys: pytest.CaptureFixture[str]) -> None:
    from trioblock._cli.output import Output, key_value_table

    Output().print(key_value_table("node", [("id", "n0"), ("a much longer key", "value")]))
    out = capsys.readouterr().out
    assert "a much longer key" in out and out.endswith("\n")
    assert all(line == line.rstrip() for line in out.split("\n")), repr(out)


def test_an_error_under_json_is_a_json_line(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from trioblock._cli.output import Output

    Output(json_mode=True).error("cannot reach node n0")
    captured = capsys.readouterr()
    assert captured.out == ""
    assert json.loads(captured.err) == {"error": "cannot reach node n0"}
