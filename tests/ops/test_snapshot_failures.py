"""Metadata snapshots when the disk fails under them: a restore that fails midway
keeps the database, an automatic snapshot whose pruning fails keeps the node running
— through the public API."""

from __future__ import annotations

import errno
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

import trioblock

A = b"block a " * 300


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


async def a_node_with_a_snapshot(
    open_ops_node: Callable[..., Any], config: trioblock.Config
) -> bytes:
    async with open_ops_node(config) as bm:
        h: bytes = await bm.put_block(A)
        await bm.add_reference(h, "kept")
        await bm.snapshot_metadata()
        await bm.add_reference(h, "after the snapshot")
    return h


async def test_a_restore_that_runs_out_of_space_leaves_the_database_in_place(
    open_ops_node: Callable[..., Any],
    make_config: Callable[..., Any],
    autojump_clock: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = make_config()
    meta = Path(config.metadata_dir)
    h = await a_node_with_a_snapshot(open_ops_node, config)
    before = names(meta)

    def full(src: Any, dst: Any, **_kw: Any) -> None:
        Path(dst).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(shutil, "copyfile", full)
        with pytest.raises(trioblock.DatabaseError, match="No space left"):
            trioblock.restore_metadata(meta)
    assert names(meta) == before  # nothing moved, no .tmp
    async with open_ops_node(config) as bm:
        assert sorted(r.owner for r in bm.references(h)) == [b"after the snapshot", b"kept"]


async def test_a_restore_that_cannot_write_its_copy_leaves_the_database_in_place(
    open_ops_node: Callable[..., Any], make_config: Callable[..., Any], autojump_clock: Any
) -> None:
    config = make_config()
    meta = Path(config.metadata_dir)
    h = await a_node_with_a_snapshot(open_ops_node, config)
    (meta / "trioblock.sqlite.tmp").mkdir()  # where the copy goes: not a file
    with pytest.raises(trioblock.DatabaseError, match="restoring"):
        trioblock.restore_metadata(meta)
    assert not [n for n in names(meta) if ".damaged-" in n]
    async with open_ops_node(config) as bm:
        assert len(bm.references(h)) == 2


async def test_an_automatic_snapshot_whose_pruning_fails_keeps_the_node_running(
    open_ops_node: Callable[..., Any],
    make_config: Callable[..., Any],
    autojump_clock: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "trioblock")
    config = make_config(metadata_auto_snapshot_interval=60.0, metadata_snapshots_kept=1)
    meta = Path(config.metadata_dir)
    # An old "snapshot" that cannot be unlinked (a directory in its name).
    (meta / "snapshots" / "20200101T000000.000000Z.sqlite").mkdir(parents=True)
    async with open_ops_node(config) as bm:
        await trio.sleep(200)  # three automatic snapshots, each pruning fails
        h = await bm.put_block(b"still alive")
        assert await bm.get_block(h) == b"still alive"
        assert len(await bm.metadata_snapshots()) >= 2
    assert any("20200101T000000.000000Z.sqlite" in r.getMessage() for r in caplog.records)
