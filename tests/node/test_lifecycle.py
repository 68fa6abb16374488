"""Opening, closing, crash-restart and cancellation of a node."""

from __future__ import annotations

import contextlib
import logging
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

import trioblock
from trioblock import ConfigError, NodeClosedError, StaticLayout, blake2sum
from trioblock._core.block import BlockHeader, DataBlock, decode_block
from trioblock._core.hashing import Hash
from trioblock._storage.blockfiles import BlockStore


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("node_id", "has space"),
        ("node_id", ""),
        ("resync_workers", 9),
        ("resync_workers", 0),
        ("gc_delay", -1.0),
        ("compression_level", 99),
        ("rpc_timeout", 0),
        ("resync_retry_delay", 0),
        ("resync_tranquility", -3),
        ("data_dir", []),
        ("metadata_fsync", 1),
    ],
)
async def test_bad_config_fails_at_open_naming_the_field(
    make_config, tmp_path: Path, field: str, value: Any
) -> None:
    config = make_config(**{field: value})
    with pytest.raises(ConfigError) as info:
        async with trioblock.open_block_manager(config):
            pytest.fail("opened with a bad configuration")
    assert info.value.field == field
    assert not (tmp_path / "meta").exists()


@pytest.mark.parametrize(
    ("overrides", "synchronous"),
    [({}, 2), ({"metadata_fsync": True}, 2), ({"metadata_fsync": False}, 1)],
    ids=["default", "on", "off"],
)
async def test_metadata_fsync_sets_sqlite_synchronous(
    open_node, overrides: dict[str, Any], synchronous: int
) -> None:
    """``metadata_fsync`` (on by default): ``synchronous=FULL`` (2), else ``NORMAL`` (1),
    in WAL mode either way; the transaction's connection is the one every commit uses."""
    h = blake2sum(b"referenced")
    async with open_node(**overrides) as bm:
        with bm.transaction() as tx:
            assert tx.execute("PRAGMA synchronous").fetchone() == (synchronous,)
            assert tx.execute("PRAGMA journal_mode").fetchone() == ("wal",)
            bm.incref(h, tx)
        assert bm.get_block_rc(h) == 1
    # A reopen with the other setting applies it (nothing is kept in the file).
    flipped = {"metadata_fsync": synchronous != 2}
    async with open_node(**flipped) as bm:
        with bm.transaction() as tx:
            assert tx.execute("PRAGMA synchronous").fetchone() == (3 - synchronous,)
        assert bm.get_block_rc(h) == 1


async def test_layout_without_this_node_is_a_config_error(make_config) -> None:
    with pytest.raises(ConfigError) as info:
        layout = StaticLayout(["x", "y"], replication_factor=2)
        async with trioblock.open_block_manager(make_config(), layout=layout):
            pass
    assert info.value.field == "node_id"


async def test_clean_shutdown_leaves_no_temp_files_and_closes_the_db(
    open_node, autojump_clock, data_dir: Path, meta_dir: Path, disk
) -> None:
    async with open_node(gc_delay=0) as bm:
        hashes = [await bm.put_block(b"block %d" % i) for i in range(20)]
        for h in hashes[:10]:
            bm.incref(h)
            bm.decref(h)
        await trio.sleep(10)  # deletions are due now; leave while they run
    assert disk.temp_files_under(data_dir) == []
    with pytest.raises(NodeClosedError):
        bm.get_block_rc(hashes[0])
    # The database is consistent and no longer in use: another writer gets it at once.
    conn = sqlite3.connect(meta_dir / "trioblock.sqlite", timeout=0)
    try:
        conn.execute("BEGIN EXCLUSIVE")
        conn.execute("ROLLBACK")
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        conn.close()


async def test_shutdown_while_a_put_is_running_elsewhere_is_clean(
    open_node, autojump_clock, data_dir: Path, disk
) -> None:
    data = b"in flight " * 100_000
    async with trio.open_nursery() as nursery, open_node() as bm:

        async def putter() -> None:
            with contextlib.suppress(NodeClosedError):  # the node closed first
                await bm.put_block(data)

        for _ in range(3):
            nursery.start_soon(putter)
        await trio.lowlevel.checkpoint()
    assert disk.temp_files_under(data_dir) == []
    for path in disk.files_under(data_dir):
        h = Hash.from_hex(path.name.split(".")[0])
        block = DataBlock(BlockHeader.COMPRESSED, path.read_bytes())
        assert decode_block(h, block) == data


async def test_restart_keeps_blocks_refcounts_queue_and_errors(open_node, autojump_clock) -> None:
    missing = blake2sum(b"missing")
    async with open_node() as bm:
        kept = await bm.put_block(b"kept")
        bm.incref(kept)
        bm.incref(kept)
        bm.incref(missing)
        await trio.sleep(61)
        await trio.testing.wait_all_tasks_blocked()
        errors = bm.list_resync_errors()
        queue = bm.list_resync_queue(10)
        assert len(errors) == 1 and [q.hash for q in queue] == [missing]
    async with open_node() as bm:
        assert await bm.get_block(kept) == b"kept"
        assert bm.get_block_rc(kept) == 2
        assert bm.get_block_rc(missing) == 1
        assert bm.list_resync_errors() == errors
        assert bm.list_resync_queue(10) == queue


async def test_crash_image_reopens_with_everything_committed(
    open_node, make_config, autojump_clock, tmp_path: Path
) -> None:
    """Copy the directories while the node runs (as a crash would leave them), reopen."""
    async with open_node(gc_delay=60) as bm:
        a = await bm.put_block(b"a" * 1000)
        b = await bm.put_block(b"b" * 1000)
        bm.incref(a)
        bm.incref(b)
        bm.decref(b)
        with bm.transaction() as tx:
            tx.execute("CREATE TABLE app (k TEXT)")
            tx.execute("INSERT INTO app VALUES ('committed')")
            bm.incref(a, tx)
        await trio.testing.wait_all_tasks_blocked()
        queue = bm.list_resync_queue(10)
        # A half-written temp file, as if the process died in the middle of a write.
        final = next((tmp_path / "data").rglob("*.zst"))
        final.with_name(final.name + ".tmp0badc0de").write_bytes(b"torn")
        shutil.copytree(tmp_path / "meta", tmp_path / "crash-meta")
        shutil.copytree(tmp_path / "data", tmp_path / "crash-data")
    crashed = make_config(
        metadata_dir=tmp_path / "crash-meta", data_dir=tmp_path / "crash-data", gc_delay=60
    )
    async with open_node(crashed) as bm:
        await trio.testing.wait_all_tasks_blocked()  # the background temp-file sweep
        assert not list((tmp_path / "crash-data").rglob("*.tmp*"))
        assert await bm.get_block(a) == b"a" * 1000
        assert await bm.get_block(b) == b"b" * 1000
        assert bm.get_block_rc(a) == 2
        assert bm.get_block_rc(b) == 0
        assert bm.list_resync_queue(10) == queue
        with bm.transaction() as tx:
            assert tx.execute("SELECT k FROM app").fetchall() == [("committed",)]


def _assert_store_is_sound(data_dir: Path) -> list[Hash]:
    """No temp file, and every final file is a complete, valid copy of its name."""
    leftovers = [p for p in data_dir.rglob("*") if p.is_file() and ".tmp" in p.name]
    assert leftovers == []
    found = []
    for path in data_dir.rglob("*"):
        if not path.is_file() or path.name == "trioblock-marker":
            continue
        name, _, suffix = path.name.partition(".")
        header = BlockHeader.COMPRESSED if suffix == "zst" else BlockHeader.PLAIN
        decode_block(Hash.from_hex(name), DataBlock(header, path.read_bytes()))
        found.append(Hash.from_hex(name))
    return found


async def test_put_cancelled_at_every_checkpoint_is_all_or_nothing(
    open_node, autojump_clock, data_dir: Path
) -> None:
    outcomes = {"stored": 0, "absent": 0}
    async with open_node() as bm:
        for n in range(40):
            data = b"cancel me %d " % n * 5000
            h = blake2sum(data)
            scope = trio.CancelScope()

            async def put(scope: trio.CancelScope = scope, data: bytes = data) -> None:
                with scope:
                    await bm.put_block(data)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(put)
                for _ in range(n):
                    await trio.lowlevel.checkpoint()
                scope.cancel()
            present = _assert_store_is_sound(data_dir)
            if h in present:
                outcomes["stored"] += 1
                assert await bm.get_block(h) == data
            else:
                outcomes["absent"] += 1
                assert not await bm.has_local_block(h)
    # The loop really did interrupt puts at different points.
    assert outcomes["stored"] > 0 and outcomes["absent"] > 0


async def test_put_cancelled_by_deadlines_around_a_slow_disk(
    open_node, autojump_clock, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store that takes 1 s of virtual time, cancelled at deadlines before, during, after."""
    outcomes = set()
    async with open_node() as bm:
        real_write = BlockStore.write_block

        async def slow_write(*args: Any) -> Any:
            await trio.sleep(0.5)
            result = await real_write(*args)
            await trio.sleep(0.5)
            return result

        monkeypatch.setattr(BlockStore, "write_block", slow_write)
        for i, deadline in enumerate([0, 0.25, 0.5, 0.75, 1.0, 1.5]):
            data = b"deadline %d " % i * 3000
            with trio.move_on_after(deadline):
                await bm.put_block(data)
            present = _assert_store_is_sound(data_dir)
            outcomes.add(blake2sum(data) in present)
    assert outcomes == {True, False}


async def test_put_cancelled_with_real_threads_is_all_or_nothing(open_node, data_dir: Path) -> None:
    """Without a MockClock the write runs in a thread; a cancel never tears it."""
    async with open_node() as bm:
        for i in range(10):
            data = b"threaded %d " % i * 20_000
            with trio.move_on_after(0.0001 * i):
                await bm.put_block(data)
            present = _assert_store_is_sound(data_dir)
            if blake2sum(data) in present:
                assert await bm.get_block(blake2sum(data)) == data


async def test_every_public_method_after_close_raises_node_closed_error(
    open_node, autojump_clock
) -> None:
    async with open_node() as bm:
        h = await bm.put_block(b"kept")
        bm.incref(h)
    sync_calls = {
        "incref": lambda: bm.incref(h),
        "decref": lambda: bm.decref(h),
        "get_block_rc": lambda: bm.get_block_rc(h),
        "get_rc_entry": lambda: bm.get_rc_entry(h),
        "rc_len": bm.rc_len,
        "resync_queue_len": bm.resync_queue_len,
        "resync_errors_len": bm.resync_errors_len,
        "list_resync_errors": bm.list_resync_errors,
        "list_resync_queue": bm.list_resync_queue,
        "retry_now": lambda: bm.retry_now(h),
        "retry_all_now": bm.retry_all_now,
        "purge": lambda: bm.purge(h),
        "set_resync_workers": lambda: bm.set_resync_workers(2),
        "set_resync_tranquility": lambda: bm.set_resync_tranquility(1),
        "scrub_status": bm.scrub_status,
        "workers": bm.workers,
        "transaction": bm.transaction,
        "stream_block": lambda: bm.stream_block(h),
        "start_operation": lambda: bm.start_operation("repair"),
        "operation_status": lambda: bm.operation_status("repair"),
    }
    for name, call in sync_calls.items():
        with pytest.raises(NodeClosedError, match="node n1 is closed"):
            call()
            pytest.fail(f"{name} did not raise")
    async_calls = {
        "put_block": lambda: bm.put_block(b"x"),
        "rpc_put_block": lambda: bm.rpc_put_block(blake2sum(b"x"), b"x"),
        "get_block": lambda: bm.get_block(h),
        "has_local_block": lambda: bm.has_local_block(h),
        "local_block_path": lambda: bm.local_block_path(h),
        "scrub start": lambda: bm.scrub("start"),
        "repair": bm.repair,
        "rebalance": bm.rebalance,
        "data_dir_usage": bm.data_dir_usage,
        "wait_scrub_runs": bm.wait_scrub_runs,
    }
    for name, acall in async_calls.items():
        with pytest.raises(NodeClosedError):
            await acall()
            pytest.fail(f"{name} did not raise")


async def test_a_sweep_of_stale_temp_files_is_logged_once_with_the_node_id(
    open_node, make_config, autojump_clock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = make_config()
    async with open_node(config) as bm:
        await bm.put_block(b"a block next to a torn temp file" * 10)
    final = next((tmp_path / "data").rglob("*.zst"))
    final.with_name(final.name + ".tmp0badc0de").write_bytes(b"torn")
    caplog.set_level(logging.INFO, logger="trioblock")
    async with open_node(config):
        await trio.sleep(1)  # the sweep runs in the background
    lines = [r.getMessage() for r in caplog.records if "stale temp files" in r.getMessage()]
    assert lines == [f"{config.node_id}: removed 1 stale temp files left by an earlier crash"]
