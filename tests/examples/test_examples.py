"""The examples run and say what they should; the code in docs/transport.md works.

- ``examples/in_process_cluster.py``, ``examples/tcp_cluster.py`` and
  ``examples/grow_cluster.py`` run as subprocesses
  (``sys.executable``), as a user would run them: exit 0 and the key narrated lines;
- the Unix-socket transport of ``docs/transport.md`` (section 4) passes
  ``check_transport`` and carries a two-node cluster: the test executes the Python blocks
  that follow the ``<!-- tested: ... -->`` markers, so the page cannot drift from code
  that works.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_TIMEOUT = 120.0


def run_example(name: str) -> str:
    """Run ``examples/<name>`` from the repository root; return its stdout (exit 0 asserted)."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=EXAMPLE_TIMEOUT,
    )
    assert done.returncode == 0, f"{name} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def assert_lines(output: str, *expected: str) -> None:
    """Each expected text appears in ``output``, in this order."""
    position = 0
    for text in expected:
        found = output.find(text, position)
        assert found >= 0, f"missing (in order) {text!r} in:\n{output}"
        position = found + len(text)


def test_dedup_backup_example() -> None:
    out = run_example("dedup_backup.py")
    assert_lines(
        out,
        "through a gateway",
        "snapshot 1: 22 files",
        "snapshot 2: 22 files",
        "only 3 new",
        "restored restore-1",
        "byte-identical: True",
        "restored restore-2",
        "byte-identical: True",
        "n1 crashed; snapshot 1 deleted anyway",
        "n1 restarted and caught up by itself: 31 reference updates pulled",
        "after gc_delay: 90 block files",
        "snapshot 2 still restores byte-identical: True",
        "done",
    )


def test_in_process_cluster_example() -> None:
    out = run_example("in_process_cluster.py")
    assert_lines(
        out,
        "3 nodes up: n0, n1, n2",
        "put 5 blocks through n0",
        "stopped n2; writing 5 more blocks with the quorum (2 of 3)",
        "anti-entropy pulled the 5 references it missed",
        "after resync n2 holds 5/5 of the blocks written while it was down",
        "wiped n1 (new empty disk): it holds 0 blocks",
        "n1 pulled 10 references from its peers",
        "after repair n1 holds 10/10 blocks again",
        "get_block still returned the right 40000 bytes (from a peer); n0 counted 1 corruption",
        "n0 repaired its copy: True",
        "cluster stopped cleanly",
    )


def test_tcp_cluster_example() -> None:
    out = run_example("tcp_cluster.py")
    assert len(re.findall(r"trioblock node n\d ready on 127\.0\.0\.1:\d+", out)) == 4
    assert "trioblock._cli" not in (ROOT / "examples" / "tcp_cluster.py").read_text()
    assert_lines(
        out,
        "3 nodes up: replication factor 3, write quorum 2",
        "put and referenced 4 blocks through a gateway",
        "read 4/4 blocks back",
        "n0 holds 4/4 of them on its disk",
        "n1 holds 4/4 of them on its disk",
        "n2 holds 4/4 of them on its disk",
        "stopped n2 with SIGTERM: it said 'trioblock node n2 stopped', exit code 0",
        "put and referenced 4 more blocks with n2 down: quorum reached (n0 + n1)",
        "read 4/4 of them back",
        "trioblock node n2 ready on",
        "n2 caught up by itself",
        "cluster stopped cleanly: exit codes n0=0, n1=0, n2=0",
    )


def test_grow_cluster_example() -> None:
    out = run_example("grow_cluster.py")
    assert len(re.findall(r"trioblock node n\d ready on 127\.0\.0\.1:\d+", out)) == 4
    assert_lines(
        out,
        "3 nodes up in zone dc1: replication factor 3",
        "put and referenced 12 blocks through a gateway",
        "trioblock node n3 ready on",
        "n3 started with join = true, knowing only n0",
        "+ n3: zone dc1, capacity 1.0 TiB, address 127.0.0.1:",
        "apply would make version 2: 4 node(s) in 1 zone(s)",
        "trioblock layout apply: applied layout version 2 (was 1)",
        "n3 is synced to version 2",
        "grown to 4 nodes: settled at version 2",
        "trioblock layout remove n1 + apply: applied layout version 3 (was 2)",
        "n1 is drained: it may be switched off",
        "n1 retired: it held 0 blocks when switched off (exit code 0)",
        "read 12/12 blocks back through the gateway, byte-identical (layout version 3)",
        "cluster stopped cleanly: exit codes n0=0, n2=0, n3=0",
    )
    held = re.search(r"n3 holds (\d+)/12 blocks", out)
    assert held is not None and int(held.group(1)) > 0, out


# ---------------------------------------------------------------------------------------
# docs/transport.md, section 4

TESTED_BLOCK = re.compile(r"<!-- tested: [^>]*-->\n```python\n(.*?)\n```", re.DOTALL)


@pytest.fixture(scope="module")
def transport_doc() -> dict[str, Any]:
    """The namespace left by the tested blocks of docs/transport.md, executed in order."""
    blocks = TESTED_BLOCK.findall((ROOT / "docs" / "transport.md").read_text())
    assert len(blocks) == 2, "docs/transport.md should hold two tested Python blocks"
    namespace: dict[str, Any] = {"__name__": "transport_doc"}
    for block in blocks:
        exec(compile(block, "docs/transport.md", "exec"), namespace)
    return namespace


async def test_doc_unix_transport_passes_check_transport(transport_doc: dict[str, Any]) -> None:
    await transport_doc["check_unix_transport"]()


async def test_doc_unix_transport_carries_a_cluster(transport_doc: dict[str, Any]) -> None:
    # Unix socket paths are short (about 100 bytes): keep the socket directory short.
    with tempfile.TemporaryDirectory(prefix="tb-") as root:
        sockets = Path(root) / "s"
        sockets.mkdir()
        await transport_doc["two_nodes"](Path(root), sockets)


# ---------------------------------------------------------------------------------------
# Complete programs in README.md and docs/*.md (the blocks that call trio.run) run as shown

PYTHON_BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


def _runnable_blocks() -> list[tuple[str, str]]:
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    return [
        (f"{page.name}#{number}", block)
        for page in pages
        for number, block in enumerate(PYTHON_BLOCK.findall(page.read_text()))
        if "trio.run(" in block
    ]


def test_the_docs_hold_runnable_programs() -> None:
    names = [name for name, _ in _runnable_blocks()]
    assert "README.md#0" in names and "cluster.md#0" in names, names


@pytest.mark.parametrize(("name", "block"), _runnable_blocks(), ids=lambda v: v[:20])
def test_runnable_doc_block(name: str, block: str, tmp_path: Path) -> None:
    script = tmp_path / "block.py"
    script.write_text(block)
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=EXAMPLE_TIMEOUT,
    )
    assert done.returncode == 0, f"{name} exited {done.returncode}:\n{done.stderr}"
