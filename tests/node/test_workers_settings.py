"""Run-time knobs (resync workers, tranquility), ``workers()`` and metrics."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from trioblock import WorkerInfo, blake2sum

STATES = {"busy", "throttled", "idle", "done"}


def resync_workers(bm) -> list[WorkerInfo]:
    return sorted((w for w in bm.workers() if w.name.startswith("resync")), key=lambda w: w.name)


async def test_workers_reports_one_idle_resync_worker_by_default(open_node, autojump_clock) -> None:
    async with open_node() as bm:
        await trio.testing.wait_all_tasks_blocked()
        infos = bm.workers()
        assert all(isinstance(w, WorkerInfo) and w.state in STATES for w in infos)
        (worker,) = resync_workers(bm)
        assert worker.state == "idle"
        assert worker.queue_length == 0
        assert worker.errors == 0
        assert worker.tranquility == 2


async def test_workers_reports_queue_length(open_node, autojump_clock) -> None:
    async with open_node() as bm:
        bm.incref(blake2sum(b"a"))
        bm.incref(blake2sum(b"b"))
        await trio.testing.wait_all_tasks_blocked()
        assert resync_workers(bm)[0].queue_length == 2


@pytest.mark.parametrize("n", [1, 3, 8])
async def test_set_resync_workers_takes_effect_and_persists(
    open_node, autojump_clock, n: int
) -> None:
    async with open_node() as bm:
        assert bm.set_resync_workers(n) == n
        await trio.testing.wait_all_tasks_blocked()
        assert [w.name for w in resync_workers(bm)] == [f"resync-{i}" for i in range(n)]
        # Fewer again: the extra workers stop.
        assert bm.set_resync_workers(2) == 2
        await trio.testing.wait_all_tasks_blocked()
        assert len(resync_workers(bm)) == 2
        bm.set_resync_workers(n)
        await trio.testing.wait_all_tasks_blocked()
        assert len(resync_workers(bm)) == n
    # The persisted value wins over the configured one.
    async with open_node(resync_workers=1) as bm:
        await trio.testing.wait_all_tasks_blocked()
        assert len(resync_workers(bm)) == n


@pytest.mark.parametrize("bad", [0, 9, -1, True, 2.0, "3", None])
async def test_set_resync_workers_rejects_out_of_range(open_node, bad: object) -> None:
    async with open_node() as bm:
        with pytest.raises(ValueError):
            bm.set_resync_workers(bad)  # type: ignore[arg-type]
        assert len(resync_workers(bm)) == 1


async def test_many_workers_drain_the_queue_once(open_node, autojump_clock) -> None:
    async with open_node(gc_delay=0) as bm:
        bm.set_resync_workers(8)
        t0 = trio.current_time()
        hashes = [await bm.put_block(b"block %d" % i) for i in range(30)]
        for h in hashes:
            bm.incref(h)
            bm.decref(h)
        await trio.sleep_until(t0 + 11)
        await trio.testing.wait_all_tasks_blocked()
        assert bm.metrics.deletes == 30
        # What remains are the incref checks, due at 2 × rpc_timeout.
        assert bm.resync_queue_len() == 30
        await trio.sleep_until(t0 + 61)
        await trio.testing.wait_all_tasks_blocked()
        assert bm.resync_queue_len() == 0
        assert bm.rc_len() == 0
        assert bm.resync_errors_len() == 0


async def test_set_resync_tranquility_takes_effect_and_persists(open_node, autojump_clock) -> None:
    async with open_node() as bm:
        assert bm.set_resync_tranquility(7) == 7
        assert resync_workers(bm)[0].tranquility == 7
        with pytest.raises(ValueError):
            bm.set_resync_tranquility(-1)
        with pytest.raises(ValueError):
            bm.set_resync_tranquility(1.5)  # type: ignore[arg-type]
    async with open_node(resync_tranquility=2) as bm:
        assert resync_workers(bm)[0].tranquility == 7


async def test_metrics_count_what_the_node_did(open_node, autojump_clock, data_dir, disk) -> None:
    async with open_node(gc_delay=0, compression_level=None, resync_tranquility=0) as bm:
        m = bm.metrics
        assert m.counters()["bytes_written"] == 0
        t0 = trio.current_time()
        h = await bm.put_block(b"x" * 1000)
        assert m.bytes_written == 1000
        await bm.put_block(b"x" * 1000)  # kept: nothing written
        assert m.bytes_written == 1000
        assert await bm.get_block(h) == b"x" * 1000
        assert m.bytes_read == 1000
        assert m.read_duration.count == 1 and m.write_duration.count >= 1

        bm.incref(h)
        bm.decref(h)
        await trio.sleep_until(t0 + 10)
        await trio.testing.wait_all_tasks_blocked()
        assert m.deletes == 1
        resyncs = m.resyncs
        assert resyncs >= 1

        h2 = await bm.put_block(b"y" * 100)
        disk.flip_byte(disk.block_file(data_dir, h2, compressed=False))
        with pytest.raises(Exception):  # noqa: B017 - CorruptBlockError, checked elsewhere
            await bm.get_block(h2)
        assert m.corruptions == 1
        await trio.testing.wait_all_tasks_blocked()
        assert m.resyncs == resyncs + 1
        assert m.resync_errors == 0  # unreferenced: nothing to fetch, nothing failed
        bm.incref(h2)
        await trio.sleep(61)
        await trio.testing.wait_all_tasks_blocked()
        assert m.resync_errors == 1
        assert set(m.counters()) >= {
            "bytes_read",
            "bytes_written",
            "corruptions",
            "deletes",
            "resyncs",
            "resync_errors",
            "resync_sent",
            "resync_received",
        }
        assert set(m.durations()) >= {"read_duration", "write_duration", "resync_duration"}
