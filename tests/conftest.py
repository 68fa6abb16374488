"""Shared fixtures and helpers for trioblock's tests.

- ``make_config(**overrides)`` builds a ``Config`` in the test's ``tmp_path``;
- ``open_node(config=None, **overrides)`` opens a node on the embedded default (no
  layout, no transport) and guards it against livelock under a ``MockClock``;
- ``disk`` (the :class:`Disk` helpers) looks at and damages data directories.

Timed tests request pytest-trio's ``autojump_clock`` fixture; nothing sleeps in real
time.

Hypothesis profiles: ``dev`` (the default) draws new examples on every run, to keep
finding bugs; ``ci`` (selected when ``CI`` is set, as on our CI) replays a fixed,
derandomized sequence, so that a submission's result does not depend on the luck of the
draw. Neither has a per-example deadline: these machines are shared and a slow example
is not a bug. ``HYPOTHESIS_PROFILE`` overrides the choice.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import settings

import trioblock

settings.register_profile("dev", deadline=None)
settings.register_profile("ci", deadline=None, derandomize=True, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))

TEMP_FILE_RE = re.compile(r"\.tmp[0-9a-f]{8}$")


MARKER_NAME = "trioblock-marker"


def files_under(root: Path) -> list[Path]:
    """Every regular file under ``root`` except the data directory's marker, sorted."""
    if not root.exists():
        return []
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name != MARKER_NAME)


def temp_files_under(root: Path) -> list[Path]:
    """Files under ``root`` that look like trioblock temp files (``*.tmp<8 hex>``)."""
    return [p for p in files_under(root) if ".tmp" in p.name]


def block_file(data_dir: Path, h: bytes, *, compressed: bool = True) -> Path:
    """Where the DESIGN says the block file of ``h`` lives."""
    hx = bytes(h).hex()
    return data_dir / hx[:2] / hx[2:4] / (hx + (".zst" if compressed else ""))


def flip_byte(path: Path, offset: int | None = None, mask: int = 0xFF) -> None:
    """Corrupt one byte of a file in place (the middle one by default)."""
    raw = bytearray(path.read_bytes())
    i = len(raw) // 2 if offset is None else offset
    raw[i] ^= mask
    path.write_bytes(bytes(raw))


class Disk:
    """Helpers for looking at data directories, handed to tests as the ``disk`` fixture."""

    files_under = staticmethod(files_under)
    temp_files_under = staticmethod(temp_files_under)
    block_file = staticmethod(block_file)
    flip_byte = staticmethod(flip_byte)


@pytest.fixture
def disk() -> type[Disk]:
    return Disk


class LivelockGuard(trio.abc.Instrument):
    """Cancels ``scope`` when a task keeps running while virtual time stands still.

    Under ``MockClock(autojump_threshold=0)`` a task that spins (never blocks) stops the
    clock for good and the test would hang forever; this turns that into a failure.
    """

    def __init__(self, scope: trio.CancelScope, max_steps: int = 5_000) -> None:
        self.scope = scope
        self.max_steps = max_steps
        self.steps: dict[trio.lowlevel.Task, int] = {}
        self.at: float | None = None
        self.tripped_at: float | None = None
        self.culprit: str | None = None

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        now = trio.current_time()
        if now != self.at:
            self.at = now
            self.steps.clear()
        steps = self.steps[task] = self.steps.get(task, 0) + 1
        if steps > self.max_steps and self.tripped_at is None:
            self.tripped_at = now
            self.culprit = task.name
            self.scope.cancel()


@contextmanager
def livelock_guard() -> Iterator[None]:
    """Fail (instead of hanging) if virtual time stops advancing under a MockClock."""
    if not isinstance(trio.lowlevel.current_clock(), trio.testing.MockClock):
        yield
        return
    with trio.CancelScope() as scope:
        guard = LivelockGuard(scope)
        trio.lowlevel.add_instrument(guard)
        try:
            yield
        finally:
            trio.lowlevel.remove_instrument(guard)
    if guard.tripped_at is not None:
        raise AssertionError(
            f"livelock: task {guard.culprit} kept running at virtual time "
            f"{guard.tripped_at} without ever blocking, so the MockClock could not advance"
        )


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., trioblock.Config]:
    def make(**overrides: Any) -> trioblock.Config:
        fields: dict[str, Any] = {
            "node_id": "n1",
            "metadata_dir": tmp_path / "meta",
            "data_dir": tmp_path / "data",
        }
        fields.update(overrides)
        return trioblock.Config(**fields)

    return make


@pytest.fixture
def open_node(
    make_config: Callable[..., trioblock.Config],
) -> Callable[..., Any]:
    @asynccontextmanager
    async def open_(
        config: trioblock.Config | None = None, **overrides: Any
    ) -> AsyncIterator[trioblock.BlockManager]:
        cfg = config if config is not None else make_config(**overrides)
        with livelock_guard():
            async with trioblock.open_block_manager(cfg) as bm:
                yield bm

    return open_


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def meta_dir(tmp_path: Path) -> Path:
    return tmp_path / "meta"


@pytest.fixture(scope="session")
def no_livelock() -> Callable[[], Any]:
    """The :func:`livelock_guard` context manager, for tests that open nodes themselves."""
    return livelock_guard
