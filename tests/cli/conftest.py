"""Fixtures for the CLI tests (helpers in ``cli_kit``).

- ``node``: one real ``trioblock serve`` process shared by a test module (start-up costs
  about a second), stopped by the fixture whatever happens;
- ``cli(*args)``: run ``trioblock._cli.main.main`` in-process, capturing its output
  (cheaper than a subprocess; the node it talks to is still a real process).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from cli_kit import NodeProcess, Result, start_node

from trioblock._cli.main import main


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    with start_node(tmp_path_factory.mktemp("node")) as running:
        yield running


@pytest.fixture
def cli(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Result]:
    """Run the CLI in-process: ``cli("status", "--json", ...)`` → :class:`Result`."""
    monkeypatch.delenv("TRIOBLOCK_SECRET", raising=False)
    monkeypatch.delenv("COLUMNS", raising=False)

    def run(*args: str) -> Result:
        capsys.readouterr()
        code = main(list(args))
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return run
