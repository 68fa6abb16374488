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


def _api_reference() -> str:
    return (ROOT / "docs" / "api.md").read_text()


def _public_modules() -> list[object]:
    import trioblock
    import trioblock.errors
    import trioblock.testing
    import trioblock.testing.strategies

    return [trioblock, trioblock.errors, trioblock.testing, trioblock.testing.strategies]


def test_every_public_name_is_in_the_api_reference() -> None:
    api = _api_reference()
    headings = [line for line in api.splitlines() if line.startswith("### ")]
    missing = [
        f"{module.__name__}.{name}"  # type: ignore[attr-defined]
        for module in _public_modules()
        for name in module.__all__  # type: ignore[attr-defined]
        if not any(f"`{name}" in heading for heading in headings)
    ]
    assert not missing, f"public names without an entry in docs/api.md: {missing}"


def test_the_api_reference_marks_async_members_and_context_managers() -> None:
    import inspect

    import trioblock

    api = _api_reference()
    for name, member in vars(trioblock.BlockManager).items():
        if not name.startswith("_") and inspect.iscoroutinefunction(member):
            assert f"#### **async** `BlockManager.{name}(" in api, name
    assert "#### **async context manager** `BlockManager.stream_block(" in api
    assert "async with bm.stream_block(h) as chunks:" in api
    assert "async for chunk in chunks:" in api
    assert "### **async context manager** function `open_block_manager(" in api
    assert "#### **context manager** `BlockManager.transaction()" in api


def test_the_api_reference_renders_unions_and_leaves_out_internals() -> None:
    api = _api_reference()
    assert "PEP 604" not in api
    assert "### type alias `Operation`" in api
    assert "`Put | Incref | Decref | Get" in api
    for internal in ("Transaction.count", "RcEntry.encode", "serve_", "resync_block", "add_worker"):
        assert internal not in api, internal
    for field in ("bytes_written", "resync_errors", "hedged_reads", "ref_sync_passes"):
        assert f"- `{field}: int = 0`" in api, field


def test_no_doc_refers_to_files_users_do_not_have() -> None:
    offenders = [
        f"{path.name}:{number}"
        for path in sorted((ROOT / "docs").glob("*.md"))
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if "DESIGN" in line or "§" in line
    ]
    assert not offenders, f"docs refer to DESIGN or use §: {offenders}"
