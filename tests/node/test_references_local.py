"""Cluster references on a single node (the embedded default): the public rules."""

from __future__ import annotations

import pytest
import trio

from trioblock import blake2sum

DATA = b"referenced block" * 100
H = blake2sum(DATA)


async def test_add_counts_once_per_owner_and_is_idempotent(open_node) -> None:
    async with open_node() as bm:
        await bm.put_block(DATA)
        await bm.add_reference(H, "snap-1")
        await bm.add_reference(H, b"snap-1")  # str and its UTF-8 bytes: one owner
        await bm.add_reference(H, "snap-2")
        assert bm.get_block_rc(H) == 2
        refs = bm.references(H)
        assert [(r.owner, r.deleted) for r in refs] == [(b"snap-1", False), (b"snap-2", False)]
        assert all(isinstance(r.owner, bytes) for r in refs)


async def test_remove_is_a_tombstone_that_wins(open_node) -> None:
    async with open_node() as bm:
        await bm.put_block(DATA)
        await bm.add_reference(H, "a")
        await bm.remove_reference(H, "a")
        assert bm.get_block_rc(H) == 0
        await bm.add_reference(H, "a")  # already deleted: quietly nothing
        await bm.remove_reference(H, "a")
        assert bm.get_block_rc(H) == 0
        (ref,) = bm.references(H)
        assert ref.owner == b"a" and ref.deleted


async def test_removing_an_unseen_pair_stores_a_tombstone_and_counts_nothing(open_node) -> None:
    async with open_node() as bm:
        await bm.remove_reference(H, "never added")
        assert bm.get_block_rc(H) == 0
        assert bm.rc_len() == 0
        (ref,) = bm.references(H)
        assert ref.deleted
        await bm.add_reference(H, "never added")
        assert bm.get_block_rc(H) == 0


async def test_unknown_hash_lists_nothing(open_node) -> None:
    async with open_node() as bm:
        assert bm.references(blake2sum(b"nobody")) == []


@pytest.mark.parametrize(
    ("owner", "error"),
    [
        (b"", ValueError),
        ("", ValueError),
        (b"x" * 129, ValueError),
        (7, TypeError),
        (None, TypeError),
    ],
)
async def test_bad_owners_are_refused_and_count_nothing(open_node, owner, error) -> None:
    async with open_node() as bm:
        with pytest.raises(error):
            await bm.add_reference(H, owner)
        with pytest.raises(error):
            await bm.remove_reference(H, owner)
        assert bm.get_block_rc(H) == 0
        assert bm.references(H) == []


async def test_bad_hashes_are_refused(open_node) -> None:
    async with open_node() as bm:
        with pytest.raises(TypeError, match="from_hex"):
            await bm.add_reference(H.hex(), "o")  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            await bm.add_reference(b"short", "o")
        assert bm.rc_len() == 0


async def test_a_removed_block_is_deleted_after_gc_delay(open_node, autojump_clock) -> None:
    async with open_node(gc_delay=60) as bm:
        await bm.put_block(DATA)
        await bm.add_reference(H, "a")
        await bm.remove_reference(H, "a")
        await trio.sleep(30)
        assert await bm.has_local_block(H)
        await trio.sleep(60)
        assert not await bm.has_local_block(H)


async def test_tombstones_are_collected_after_gc_delay_only(open_node, autojump_clock) -> None:
    async with open_node(gc_delay=60) as bm:
        await bm.remove_reference(H, "a")
        await trio.sleep(30)
        await bm.sync_references()
        assert len(bm.references(H)) == 1
        await trio.sleep(31)
        report = await bm.sync_references()
        assert report.collected == 1
        assert bm.references(H) == []
        # Once collected, a new add of the pair is a new reference.
        await bm.put_block(DATA)
        await bm.add_reference(H, "a")
        assert bm.get_block_rc(H) == 1


async def test_references_survive_a_restart(open_node, make_config) -> None:
    config = make_config()
    async with open_node(config) as bm:
        await bm.put_block(DATA)
        await bm.add_reference(H, "a")
        await bm.add_reference(H, "b")
        await bm.remove_reference(H, "b")
    async with open_node(config) as bm:
        assert bm.get_block_rc(H) == 1
        assert [(r.owner, r.deleted) for r in bm.references(H)] == [(b"a", False), (b"b", True)]


async def test_a_referenced_block_whose_file_vanished_is_queued_without_a_read(
    open_node, disk, autojump_clock
) -> None:
    async with open_node() as bm:
        await bm.put_block(DATA)
        await bm.add_reference(H, "a")
        await trio.sleep(120)  # the put's own check has run
        queued_before = bm.resync_queue_len()
        disk.block_file(bm.config.data_dirs[0].path, H).unlink()
        report = await bm.sync_references()
        assert report.missing == 1
        assert bm.resync_queue_len() == queued_before + 1


async def test_a_recount_waits_for_a_transaction_another_task_holds(
    open_node, autojump_clock
) -> None:
    """The deletion check repairs a count lower than the live references; when the
    application holds a transaction open at that moment, the check waits for it rather
    than failing (no resync error, count repaired, block kept)."""
    async with open_node(gc_delay=60) as bm:
        await bm.put_block(DATA)
        await bm.add_reference(H, "a")
        bm.decref(H)  # mixing the APIs: the count says 0 while "a" is alive
        await trio.sleep(65)  # the copy is older than gc_delay; the check is at +70 s

        with bm.transaction() as tx:
            tx.execute("CREATE TABLE app (k TEXT)")
            await trio.sleep(20)  # the deletion check comes due meanwhile
        await trio.sleep(5)
        assert bm.list_resync_errors() == []
        assert bm.get_block_rc(H) == 1
        assert await bm.has_local_block(H)
