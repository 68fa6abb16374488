"""The API reference in docs/api.md is generated from the docstrings and kept current."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_api_reference_is_up_to_date() -> None:
    spec = importlib.util.spec_from_file_location("gen_api", ROOT / "docs" / "gen_api.py")
    assert spec is not None and spec.loader is not None
    gen_api = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen_api)
    current = (ROOT / "docs" / "api.md").read_text()
    assert current == gen_api.render(), "docs/api.md is stale: run `python docs/gen_api.py`"


def test_readme_opens_with_the_two_commands() -> None:
    blocks = (ROOT / "README.md").read_text().split("```")
    first, second = (blocks[i].removeprefix("sh").strip() for i in (1, 3))
    assert first.endswith("python -m trioblock demo")
    assert second.endswith("python -m pytest -q")
    assert second in (ROOT / ".ci" / "run").read_text()
