"""The scrub worker: verification, quarantine, commands, throttling, checkpoints, schedule."""

from __future__ import annotations

import logging
import os
import sqlite3
from pathlib import Path
from typing import Any

import cbor2
import pytest
import trio
from ops_kit import block_file, flip_byte, put_blocks, wait_scrub_runs

from trioblock._node.background.blockwalk import BlockWalk, hash_position
from trioblock._node.background.scrub import JITTER_FRACTION, SCRUB_STATE_KEY, VERIFY_BATCH
from trioblock._node.background.scrubstate import ScrubRecord, ScrubState
from trioblock._storage import RealDisk

DAY = 86400.0


async def test_scrub_quarantines_counts_and_queues_a_corrupt_block(
    open_ops_node: Any, data_dir: Path, autojump_clock: Any
) -> None:
    async with open_ops_node() as bm:
        hashes = await put_blocks(bm, 20)
        bad = hashes[7]
        path = block_file(data_dir, bad)
        flip_byte(path)
        assert bm.scrub_status().state == "idle"
        await bm.scrub("start")
        await wait_scrub_runs(bm)
        status = bm.scrub_status()
        assert status.state == "finished"
        assert status.progress == 1.0
        assert status.blocks_checked == 20
        assert status.corruptions_found == 1
        assert bm.metrics.corruptions == 1
        assert not path.exists()
        assert path.with_name(path.name + ".corrupted").exists()
        # Queued at once: the resync tried to fetch it back (no peers here) and failed.
        await trio.sleep(1)
        assert [e.hash for e in bm.list_resync_errors()] == [bad]
        for h in hashes:
            if h != bad:
                assert await bm.get_block(h)
    # The total of corruptions found survives a restart.
    async with open_ops_node() as bm:
        assert bm.scrub_status().corruptions_found == 1
        assert bm.scrub_status().state == "finished"


async def test_scrub_verifies_plain_and_compressed_copies(
    open_ops_node: Any, data_dir: Path, autojump_clock: Any
) -> None:
    async with open_ops_node() as bm:
        plain = [await bm.put_block(b"plain %d" % i, compress=False) for i in range(5)]
        packed = await put_blocks(bm, 5)
        flip_byte(block_file(data_dir, plain[2], compressed=False))
        flip_byte(block_file(data_dir, packed[3]))
        status = await bm.scrub("start")
        assert status.state == "running"
        await wait_scrub_runs(bm)
        assert bm.scrub_status().corruptions_found == 2
        assert bm.scrub_status().blocks_checked == 10


async def test_pause_holds_the_scrub_until_resume(open_ops_node: Any, autojump_clock: Any) -> None:
    async with open_ops_node() as bm:
        n = 4 * VERIFY_BATCH  # several verification batches
        await put_blocks(bm, n)
        await bm.scrub(0)  # never sleeps, so the loop below may poll with sleep(0)
        await bm.scrub("start")
        while bm.scrub_status().blocks_checked < 5:
            await trio.lowlevel.checkpoint()
        status = await bm.scrub("pause", 3600)
        assert status.state == "paused"
        assert status.paused_until == bm.now_msec() + 3_600_000
        done = status.blocks_checked
        assert 5 <= done < n
        assert 0 < status.progress < 1
        await trio.sleep(1800)
        assert bm.scrub_status().state == "paused"
        assert bm.scrub_status().blocks_checked == done
        status = await bm.scrub("resume")
        assert status.state == "running"
        assert status.paused_until is None
        await wait_scrub_runs(bm)
        # Every block verified exactly once across the pause.
        assert bm.scrub_status().blocks_checked == n


async def test_pause_ends_by_itself(open_ops_node: Any, autojump_clock: Any) -> None:
    async with open_ops_node() as bm:
        await put_blocks(bm, 10)
        await bm.scrub("start")
        await bm.scrub("pause", 600)
        start = trio.current_time()
        await wait_scrub_runs(bm)
        assert trio.current_time() - start >= 600
        assert bm.scrub_status().blocks_checked == 10


async def test_cancel_abandons_the_run(open_ops_node: Any, autojump_clock: Any) -> None:
    async with open_ops_node() as bm:
        await put_blocks(bm, 10)
        await bm.scrub("start")
        await bm.scrub("pause", 600)
        status = await bm.scrub("cancel")
        assert status.state == "idle"
        assert status.last_completed is None
        assert status.progress == 0.0
        await trio.sleep(3600)
        assert bm.scrub_status().state == "idle"
        # A new start walks everything again.
        await bm.scrub("start")
        await wait_scrub_runs(bm)
        assert bm.scrub_status().blocks_checked == 10


async def test_commands_on_the_wrong_state_change_nothing(
    open_ops_node: Any, autojump_clock: Any
) -> None:
    async with open_ops_node() as bm:
        await put_blocks(bm, 3)
        assert (await bm.scrub("pause", 10)).state == "idle"
        assert (await bm.scrub("resume")).state == "idle"
        assert (await bm.scrub("cancel")).state == "idle"
        await bm.scrub("start")
        await bm.scrub("pause", 100)
        assert (await bm.scrub("start")).state == "paused"


async def test_bad_commands_are_refused(open_ops_node: Any, autojump_clock: Any) -> None:
    async with open_ops_node() as bm:
        for cmd in ("stop", "", True, -1, 1001):
            with pytest.raises(ValueError):
                await bm.scrub(cmd)
        with pytest.raises(ValueError):
            await bm.scrub("pause", -5)
        with pytest.raises(ValueError):
            await bm.scrub("pause", float("nan"))


async def test_tranquility_is_persisted(open_ops_node: Any, autojump_clock: Any) -> None:
    async with open_ops_node(scrub_tranquility=4) as bm:
        assert bm.scrub_status().tranquility == 4
        assert (await bm.scrub(9)).tranquility == 9
    async with open_ops_node(scrub_tranquility=4) as bm:
        assert bm.scrub_status().tranquility == 9
        info = [w for w in bm.workers() if w.name == "scrub"]
        assert info and info[0].tranquility == 9


async def test_tranquility_throttles_in_virtual_time(
    open_ops_node: Any, autojump_clock: Any
) -> None:
    async with open_ops_node() as bm:
        await put_blocks(bm, 40)
        await bm.scrub(0)
        start = trio.current_time()
        await bm.scrub("start")
        await wait_scrub_runs(bm, 1)
        unthrottled = trio.current_time() - start
        await bm.scrub(200)
        start = trio.current_time()
        await bm.scrub("start")
        await wait_scrub_runs(bm, 2)
        throttled = trio.current_time() - start
        assert unthrottled == 0.0  # block I/O runs inline under the MockClock
        assert throttled > 0.0


async def test_restart_resumes_from_the_checkpoint(
    open_ops_node: Any, data_dir: Path, autojump_clock: Any
) -> None:
    n = 3 * VERIFY_BATCH + 10  # several verification batches
    async with open_ops_node() as bm:
        hashes = sorted(await put_blocks(bm, n), key=lambda h: h.hex())
        await bm.scrub(0)  # never sleeps, so the loop below may poll with sleep(0)
        await bm.scrub("start")
        while bm.scrub_status().blocks_checked < VERIFY_BATCH:
            await trio.lowlevel.checkpoint()
        done = bm.scrub_status().blocks_checked
    # The worker may verify one more batch before the node stops.
    # Corrupt one block already verified and one not yet verified.
    flip_byte(block_file(data_dir, hashes[done - 2]))
    flip_byte(block_file(data_dir, hashes[-1]))
    async with open_ops_node() as bm:
        status = bm.scrub_status()
        assert status.state == "running"
        assert done <= status.blocks_checked <= done + VERIFY_BATCH
        assert status.progress > 0
        await wait_scrub_runs(bm)
        status = bm.scrub_status()
        # Not one block verified twice, none skipped: the early corruption went unseen.
        assert status.blocks_checked == n
        assert status.corruptions_found == 1
        assert block_file(data_dir, hashes[done - 2]).exists()
        assert not block_file(data_dir, hashes[-1]).exists()


async def test_a_paused_scrub_stays_paused_across_a_restart(
    open_ops_node: Any, autojump_clock: Any
) -> None:
    async with open_ops_node() as bm:
        await put_blocks(bm, 10)
        await bm.scrub("start")
        until = (await bm.scrub("pause", 7200)).paused_until
    async with open_ops_node() as bm:
        status = bm.scrub_status()
        assert status.state == "paused"
        assert status.paused_until == until
        await wait_scrub_runs(bm, within=7300)
        assert bm.now_msec() >= until


async def test_automatic_scrub_runs_after_the_interval_plus_jitter(
    open_ops_node: Any, autojump_clock: Any
) -> None:
    interval = 600.0
    async with open_ops_node(scrub_interval=interval) as bm:
        await put_blocks(bm, 5)
        opened = bm.now_msec()
        status = bm.scrub_status()
        assert status.state == "idle"
        assert status.next_run is not None
        jitter = status.next_run - opened - interval * 1000
        assert 0 <= jitter <= JITTER_FRACTION * interval * 1000 + 1
        await trio.sleep((status.next_run - bm.now_msec()) / 1000 - 1)
        assert bm.scrub_status().state == "idle"
        await wait_scrub_runs(bm, within=2)
        status = bm.scrub_status()
        assert status.state == "finished"
        assert status.blocks_checked == 5
        assert status.last_completed is not None
        assert status.next_run is not None
        assert status.next_run - status.last_completed >= interval * 1000
        assert status.next_run - status.last_completed <= interval * 1400 + 1
        # ... and again.
        await wait_scrub_runs(bm, 2, within=interval * 1.5)


async def test_default_jitter_is_up_to_ten_days(open_ops_node: Any, autojump_clock: Any) -> None:
    async with open_ops_node() as bm:
        status = bm.scrub_status()
        assert status.next_run is not None
        delay = status.next_run - bm.now_msec()
        assert 25 * DAY * 1000 - 10 <= delay <= 35 * DAY * 1000


async def test_disable_scrub_stops_automatic_runs_only(
    open_ops_node: Any, autojump_clock: Any
) -> None:
    async with open_ops_node(scrub_interval=60.0, disable_scrub=True) as bm:
        await put_blocks(bm, 3)
        assert bm.scrub_status().next_run is None
        await trio.sleep(600)
        assert bm.scrub_status().state == "idle"
        await bm.scrub("start")
        await wait_scrub_runs(bm)
        assert bm.scrub_status().state == "finished"


async def test_scrub_worker_is_listed(open_ops_node: Any, autojump_clock: Any) -> None:
    async with open_ops_node() as bm:
        await put_blocks(bm, 3)
        await bm.scrub("start")
        await bm.scrub("pause", 60)
        (info,) = [w for w in bm.workers() if w.name == "scrub"]
        assert info.progress is not None
        assert "paused" in (info.info or "")


async def test_a_corrupt_stored_state_is_reset(
    open_ops_node: Any, autojump_clock: Any, meta_dir: Path
) -> None:
    async with open_ops_node() as bm:
        pass
    conn = sqlite3.connect(meta_dir / "trioblock.sqlite")
    with conn:
        conn.execute(
            "INSERT OR REPLACE INTO settings VALUES (?, ?)",
            (SCRUB_STATE_KEY, cbor2.dumps({"status": "exploded"})),
        )
    conn.close()
    async with open_ops_node() as bm:
        assert bm.scrub_status().state == "idle"


def test_scrub_state_round_trips() -> None:
    state = ScrubRecord(
        status=ScrubState.PAUSED,
        next_run=5,
        tranquility=3,
        dir_index=1,
        dir_path="/x",
        after="ab" * 32,
        started_at=1,
        last_completed=None,
        paused_until=9,
        corruptions=2,
        checked=7,
        last_checked=4,
    )
    assert ScrubRecord.decode(state.encode()) == state


def test_hash_position() -> None:
    assert hash_position("") == 0.0
    assert hash_position("8000" + "0" * 60) == 0.5
    assert hash_position("ffff" + "f" * 60) == pytest.approx(1.0, abs=1e-4)


async def test_block_walk_resumes_after_a_position(
    open_ops_node: Any, data_dir: Path, autojump_clock: Any
) -> None:
    async with open_ops_node() as bm:
        hashes = sorted(h.hex() for h in await put_blocks(bm, 300))
        walk = BlockWalk(
            [data_dir, data_dir.parent / "missing"], trio.CapacityLimiter(1), disk=RealDisk()
        )
        first = await walk.take(100)
        assert [loc.hash.hex() for loc in first] == hashes[: len(first)]
        rest = BlockWalk([data_dir], trio.CapacityLimiter(1), 0, walk.after, disk=RealDisk())
        seen = [loc.hash.hex() for loc in first]
        while batch := await rest.take(50):
            seen += [loc.hash.hex() for loc in batch]
        assert seen == hashes
        assert rest.finished and rest.progress() == 1.0


async def test_scrub_skips_what_is_not_a_block_file(
    open_ops_node: Any, data_dir: Path, autojump_clock: Any
) -> None:
    async with open_ops_node() as bm:
        (h,) = await put_blocks(bm, 1)
        path = block_file(data_dir, h)
        (path.parent / (h.hex()[:4] + "f" * 60)).mkdir()  # a directory named like a block
        (path.parent / "notes.txt").write_text("hi")
        path.with_name(path.name + ".tmp0123abcd").write_bytes(b"partial")
        await bm.scrub("start")
        await wait_scrub_runs(bm)
        assert bm.scrub_status().blocks_checked == 1
        assert bm.scrub_status().corruptions_found == 0
        (info,) = [w for w in bm.workers() if w.name == "scrub"]
        assert info.errors == 0


async def test_scrub_reports_what_stands_in_a_blocks_place_without_reading_it(
    open_ops_node: Any, data_dir: Path, autojump_clock: Any, caplog: Any
) -> None:
    async with open_ops_node() as bm:
        (h,) = await put_blocks(bm, 1)
        path = block_file(data_dir, h)
        fifo = path.parent / (h.hex()[:4] + "e" * 60)
        os.mkfifo(fifo)  # opening it to read would block the scrub for good
        link = path.parent / (h.hex()[:4] + "d" * 60 + ".zst")
        link.symlink_to(path)
        with caplog.at_level(logging.WARNING, logger="trioblock.scrub"):
            await bm.scrub("start")
            await wait_scrub_runs(bm)
        assert bm.scrub_status().blocks_checked == 1
        assert bm.scrub_status().corruptions_found == 0
        messages = [r.getMessage() for r in caplog.records]
        assert any(str(fifo) in m and "FIFO" in m for m in messages), messages
        assert any(str(link) in m and "symbolic link" in m for m in messages), messages
        assert fifo.is_fifo() and link.is_symlink()
