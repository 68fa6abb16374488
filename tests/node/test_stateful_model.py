"""One node against a plain dict model, driven by random operation sequences.

Each example runs in its own ``trio.run`` under ``MockClock(autojump_threshold=0)`` with a
fresh temporary directory. After every operation the node must agree with the model:

- ``get_block_rc`` equals the model's count;
- a block that was put and not corrupted is readable with its exact bytes, unless the
  GC was allowed to take it (count zero, past its Deletable time and more than
  ``gc_delay`` after its last put) — a referenced block is never deleted;
- a corrupted block fails with ``CorruptBlockError`` (and is then quarantined);
- an unreferenced block past its deletion check is gone (unless resync errors defer it);
- no temp file is ever visible.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import trioblock
from trioblock import CorruptBlockError, MissingBlockError, blake2sum

GC_MSEC = 600_000
#: Observations are made this many msec either side of a deadline.
MARGIN = 2
CONTENTS = [b"", b"ab" * 200, b"abc" * 3000]
EDGES = [1, 9_999, 10_000, 10_001, GC_MSEC // 2, GC_MSEC - 1, GC_MSEC, GC_MSEC + 1]
# Op names are drawn by index so that they come out about equally often; the list is
# weighted towards the operations that drive the GC. Plain advances are multiples of
# 50 s up to 2 × gc_delay, biased towards long ones.
NAMES = [
    "put+incref",
    "decref",
    "advance",
    "incref",
    "get",
    "put+incref",
    "decref",
    "advance",
    "advance-edge",
    "put",
    "corrupt",
    "restart",
]


def _op(t: tuple[int, int, int]) -> tuple[str, int, int]:
    name, which, k = NAMES[t[0]], t[1], t[2]
    msec = EDGES[k % len(EDGES)] if name == "advance-edge" else (24 - k) * 50_000
    return name, which, msec


operation = st.tuples(
    st.integers(0, len(NAMES) - 1), st.integers(0, len(CONTENTS) - 1), st.integers(0, 24)
).map(_op)


@dataclass
class Model:
    rc: int = 0
    deletable_at: int | None = None
    disk: str = "none"  # "good" | "corrupt" | "none"
    last_put: int = -(10**15)
    errored: bool = False
    #: A decref to zero queued a deletion check that has not removed the block yet.
    #: (A put alone queues nothing: an unreferenced block that was never decref'd, or
    #: that was put again after its deletion, stays until a repair or scrub.)
    check_pending: bool = False

    def may_vanish(self, now: int) -> bool:
        return (
            self.rc == 0
            and now > self.last_put + GC_MSEC
            and (self.deletable_at is None or now > self.deletable_at)
        )

    def collection_time(self) -> int | None:
        """When (node msec) the GC must have taken this block, if it must."""
        if self.rc != 0 or self.deletable_at is None or self.errored or not self.check_pending:
            return None
        # The check runs at deletable_at + 10 s, deferred until the copy is gc_delay old.
        return max(self.deletable_at + 10_000, self.last_put + GC_MSEC + 1)

    def must_be_gone(self, now: int) -> bool:
        due = self.collection_time()
        return due is not None and now >= due + MARGIN


async def run_ops(root: Path, ops: list[tuple[str, int, int]], no_livelock) -> None:
    config = trioblock.Config(
        node_id="model",
        metadata_dir=root / "meta",
        data_dir=root / "data",
        gc_delay=600.0,
        data_fsync=False,  # durability is tested elsewhere; this is about semantics
        metadata_fsync=False,
        resync_tranquility=0,  # no throttling: deadlines are exact to the msec
    )
    hashes = [blake2sum(c) for c in CONTENTS]
    model = {h: Model() for h in hashes}

    async with trio.open_nursery() as nursery:
        with no_livelock():
            bm_box: list[trioblock.BlockManager] = []

            async def node_task(task_status=trio.TASK_STATUS_IGNORED) -> None:
                async with trioblock.open_block_manager(config) as bm:
                    bm_box[:] = [bm]
                    stop = trio.Event()
                    task_status.started(stop)
                    await stop.wait()

            async def check(bm: trioblock.BlockManager) -> None:
                now = bm.now_msec()
                for i, hh in enumerate(hashes):
                    mm = model[hh]
                    assert bm.get_block_rc(hh) == mm.rc, f"rc of block {i}"
                    present = await bm.has_local_block(hh)
                    if mm.disk == "none":
                        assert not present, f"block {i} reappeared"
                        continue
                    if not present:
                        assert mm.may_vanish(now), (
                            f"block {i} deleted while protected: {mm}, now={now}"
                        )
                        mm.disk = "none"
                        mm.check_pending = False
                        continue
                    assert not mm.must_be_gone(now), f"block {i} not collected: {mm}, now={now}"
                    if mm.disk == "good":
                        assert await bm.get_block(hh) == CONTENTS[i]
                assert list((root / "data").rglob("*.tmp*")) == []

            async def advance(bm: trioblock.BlockManager, msec: int) -> None:
                """Advance virtual time, stopping to look just before and after deadlines."""
                start_node, start_trio = bm.now_msec(), trio.current_time()
                stops = set()
                for mm in model.values():
                    due = mm.collection_time()
                    if due is not None and mm.disk != "none":
                        stops.update({due - MARGIN, due + MARGIN})
                for point in sorted(p for p in stops if start_node < p < start_node + msec):
                    await trio.sleep_until(start_trio + (point - start_node) / 1000)
                    await trio.testing.wait_all_tasks_blocked()
                    await check(bm)
                await trio.sleep_until(start_trio + msec / 1000)

            stop = await nursery.start(node_task)
            for op, arg, msec in ops:
                bm = bm_box[0]
                if op == "restart":
                    stop.set()
                    await trio.testing.wait_all_tasks_blocked()
                    stop = await nursery.start(node_task)
                    continue
                if op == "decref":
                    # Mostly drop references that exist, so counts really reach zero.
                    referenced = [i for i, hh in enumerate(hashes) if model[hh].rc > 0]
                    if referenced:
                        arg = referenced[arg % len(referenced)]
                h = hashes[arg]
                m = model[h]
                if op in ("put", "put+incref"):
                    assert await bm.put_block(CONTENTS[arg]) == h
                    # A put verifies an existing copy: a corrupt one is replaced.
                    m.disk = "good"
                    m.last_put = max(m.last_put, bm.now_msec())
                    if op == "put+incref":
                        m.rc += 1
                        m.deletable_at = None
                        assert bm.incref(h) == m.rc
                elif op == "get":
                    if m.disk == "good":
                        assert await bm.get_block(h) == CONTENTS[arg]
                    elif m.disk == "corrupt":
                        try:
                            await bm.get_block(h)
                        except CorruptBlockError:
                            pass
                        else:
                            raise AssertionError("a corrupted block was returned")
                        m.disk = "none"
                        m.check_pending = False
                        m.errored = True  # its immediate resync may fail and back off
                    else:
                        try:
                            await bm.get_block(h)
                        except MissingBlockError:
                            pass
                        else:
                            raise AssertionError("an absent block was returned")
                elif op == "incref":
                    m.rc += 1
                    m.deletable_at = None
                    assert bm.incref(h) == m.rc
                    if m.disk == "none":
                        m.errored = True  # the fetch will fail on a lone node
                elif op == "decref":
                    if m.rc == 1:
                        m.deletable_at = bm.now_msec() + GC_MSEC
                        m.check_pending = True
                    m.rc = max(0, m.rc - 1)
                    assert bm.decref(h) == m.rc
                elif op == "corrupt":
                    if m.disk == "good":
                        path = await bm.local_block_path(h)
                        assert path is not None
                        raw = bytearray(path.read_bytes())
                        if raw:
                            # Bit rot: the bytes change, not the mtime. (Rewriting the
                            # file would stamp it with the real wall clock, behind the
                            # node's virtual one, and age the copy past its GC delay.)
                            mtime_ns = path.stat().st_mtime_ns
                            raw[len(raw) // 2] ^= 0x55
                            path.write_bytes(bytes(raw))
                            os.utime(path, ns=(mtime_ns, mtime_ns))
                            m.disk = "corrupt"
                elif op in ("advance", "advance-edge"):
                    await advance(bm, msec)
                await trio.testing.wait_all_tasks_blocked()

                await check(bm_box[0])
            stop.set()


@settings(
    max_examples=int(os.environ.get("TRIOBLOCK_STATEFUL_EXAMPLES", "50")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(ops=st.lists(operation, min_size=10, max_size=25))
def test_node_agrees_with_a_dict_model(ops: list[tuple[str, int, int]], no_livelock) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        trio.run(
            run_ops,
            Path(tmp),
            ops,
            no_livelock,
            clock=trio.testing.MockClock(autojump_threshold=0),
        )
