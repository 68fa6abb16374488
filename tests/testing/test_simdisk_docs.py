"""The example of docs/testing.md runs as printed."""

from __future__ import annotations

from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "testing.md"


def test_the_example_of_the_testing_guide_runs(capsys: pytest.CaptureFixture[str]) -> None:
    text = DOC.read_text()
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    exec(compile(code, str(DOC), "exec"), {"__name__": "__main__"})
    assert "n1: " in capsys.readouterr().out
