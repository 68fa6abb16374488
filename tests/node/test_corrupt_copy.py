"""The one policy for a corrupt local copy (``NodeContext.corrupt_copy_found``):
quarantine it, count it, queue a resync; with ``confirm``, a copy that verifies after
all is left alone, uncounted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trioblock import CorruptBlockError, DataDir, blake2sum
from trioblock._node.context import NodeContext

DATA = b"a copy that may rot\n" * 300
H = blake2sum(DATA)


def context(bm: Any) -> NodeContext:
    ctx = bm._local().ctx
    assert isinstance(ctx, NodeContext)
    return ctx


def queued(bm: Any) -> list[bytes]:
    return [bytes(q.hash) for q in bm.list_resync_queue()]


async def test_a_copy_that_verifies_is_left_alone_when_confirming(open_node: Any) -> None:
    async with open_node() as bm:
        await bm.put_block(DATA)
        ctx = context(bm)
        loc = await ctx.store.find(H)
        assert loc is not None
        before = queued(bm)
        found = await ctx.corrupt_copy_found(H, loc, confirm=True)
        assert (found.counted, found.quarantined) == (False, None)
        assert ctx.metrics.corruptions == 0
        assert queued(bm) == before
        assert loc.path.is_file()


async def test_a_corrupt_copy_is_quarantined_counted_and_queued(open_node: Any) -> None:
    async with open_node() as bm:
        await bm.put_block(DATA)
        ctx = context(bm)
        loc = await ctx.store.find(H)
        assert loc is not None
        loc.path.write_bytes(b"rotten")
        found = await ctx.corrupt_copy_found(H, loc, confirm=True)
        assert found.counted and found.quarantined is not None
        assert found.quarantined.name == loc.path.name + ".corrupted"
        assert found.quarantined.is_file() and not loc.path.exists()
        assert ctx.metrics.corruptions == 1
        assert bytes(H) in queued(bm)


async def test_the_copy_named_by_the_error_is_quarantined(open_node: Any) -> None:
    async with open_node() as bm:
        await bm.put_block(DATA)
        ctx = context(bm)
        loc = await ctx.store.find(H)
        assert loc is not None
        loc.path.write_bytes(b"rotten")
        found = await ctx.corrupt_copy_found(H, CorruptBlockError(H, location=loc))
        assert found.counted and found.quarantined is not None
        assert not loc.path.exists()


async def test_a_copy_already_quarantined_is_counted_and_queued(
    open_node: Any, data_dir: Path
) -> None:
    async with open_node() as bm:
        await bm.put_block(DATA)
        ctx = context(bm)
        found = await ctx.corrupt_copy_found(H)
        assert (found.counted, found.quarantined) == (True, None)
        assert ctx.metrics.corruptions == 1
        assert bytes(H) in queued(bm)
        assert await ctx.store.find(H) is not None  # nothing renamed


async def test_an_unreferenced_copy_is_counted_without_a_resync(open_node: Any) -> None:
    async with open_node() as bm:
        ctx = context(bm)
        before = queued(bm)
        found = await ctx.corrupt_copy_found(H, resync=False)
        assert found.counted
        assert ctx.metrics.corruptions == 1
        assert queued(bm) == before


async def test_a_copy_in_a_read_only_directory_is_never_moved(
    open_node: Any, tmp_path: Path
) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    async with open_node(data_dir=old) as bm:
        await bm.put_block(DATA)
    dirs = [DataDir(old, read_only=True), DataDir(new, capacity=1)]
    async with open_node(data_dir=dirs) as bm:
        ctx = context(bm)
        loc = await ctx.store.find(H)
        assert loc is not None and loc.path.is_relative_to(old)
        # Valid after all: left alone, uncounted.
        found = await ctx.corrupt_copy_found(H, loc, confirm=True)
        assert (found.counted, found.quarantined) == (False, None)
        loc.path.write_bytes(b"rotten")
        # Corrupt: counted and queued, but never renamed there.
        found = await ctx.corrupt_copy_found(H, loc, confirm=True)
        assert (found.counted, found.quarantined) == (True, None)
        assert loc.path.read_bytes() == b"rotten"
        assert ctx.metrics.corruptions == 1
        assert bytes(H) in queued(bm)
