"""Several data directories: assignment, lookups after a change, rebalance, markers,
read-only directories (DESIGN §2 "Multi-directory layout")."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import cbor2
import pytest
import trio
from ops_kit import block_file, block_hexes, flip_byte, put_blocks, wait_scrub_runs

from trioblock import ConfigError, DataDir, Hash
from trioblock._core.block import encode_block
from trioblock._core.datalayout import N_PARTITIONS, DataLayout, partition_of
from trioblock._node.background.rebalance import MoveOutcome, move_block_sync
from trioblock._storage.blockfiles import MARKER_NAME, BlockStore
from trioblock._storage.metadata import MetadataDb

A, B, C = (Path(f"/disk/{x}") for x in "abc")


def hash_in_partition(part: int) -> bytes:
    return bytes([1, 2, part >> 8, part & 0xFF]) + bytes(28)


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every entry under ``root`` (files and directories) with size and mtime."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            st = os.stat(os.path.join(dirpath, name))
            out[os.path.relpath(os.path.join(dirpath, name), root)] = (st.st_size, st.st_mtime_ns)
    st = os.stat(root)
    out["."] = (0, st.st_mtime_ns)
    return out


def stored_layout(meta: Path) -> DataLayout:
    db = MetadataDb(meta)
    try:
        return DataLayout.decode(db.get_setting("data_layout"))
    finally:
        db.close()


# -- the assignment (pure) ---------------------------------------------------------------


def test_partitions_follow_capacity() -> None:
    layout = DataLayout.initial(
        [DataDir(A, capacity="1T"), DataDir(B, capacity="2T"), DataDir(C, capacity="1T")]
    )
    assert [layout.partitions_of(p) for p in (A, B, C)] == [256, 512, 256]
    for part in range(N_PARTITIONS):
        h = hash_in_partition(part)
        assert partition_of(h) == part
        assert layout.candidate_dirs(h) == [layout.primary_dir(h)]


def test_adding_a_directory_moves_its_share_and_keeps_the_old_one_secondary() -> None:
    old = DataLayout.initial([DataDir(A)])
    new = old.update([DataDir(A, capacity=100), DataDir(B, capacity=300)])
    assert new.partitions_of(A) == 256 and new.partitions_of(B) == 768
    moved = [p for p in range(N_PARTITIONS) if new.dirs[new.primary[p]] == B]
    assert len(moved) == 768
    for part in range(N_PARTITIONS):
        h = hash_in_partition(part)
        expected = [B, A] if part in moved else [A]
        assert new.candidate_dirs(h) == expected
    assert new.has_secondaries()
    cleared = new.without_secondaries()
    assert not cleared.has_secondaries()
    assert cleared.primary == new.primary
    assert all(s == () for s in cleared.secondary)


def test_a_directory_turned_read_only_loses_every_partition() -> None:
    old = DataLayout.initial([DataDir(A, capacity=1), DataDir(B, capacity=1)])
    new = old.update([DataDir(A, capacity=1, read_only=True), DataDir(B, capacity=1)])
    assert new.partitions_of(A) == 0 and new.partitions_of(B) == N_PARTITIONS
    assert new.read_only == (0,)
    assert new.read_only_dirs == {A}
    assert all(s == (0,) for s in new.secondary)
    # A rebalance never drops a read-only directory: it may hold the only copies.
    after = new.without_secondaries()
    assert all(s == (0,) for s in after.secondary)
    assert not after.has_secondaries()


def test_with_read_only_matches_directories_by_path() -> None:
    layout = DataLayout.initial([DataDir(A, capacity=1), DataDir(B, capacity=1)]).update(
        [DataDir(A, capacity=1), DataDir(B, capacity=1), DataDir(C, read_only=True)]
    )
    shuffled = [DataDir(C, read_only=True), DataDir(B, capacity=1), DataDir(A, capacity=1)]
    assert layout.with_read_only(shuffled) == layout.with_read_only()
    assert all(s == (2,) for s in layout.with_read_only().secondary)


def test_read_only_directories_survive_encoding() -> None:
    layout = DataLayout.initial([DataDir(A, capacity=1), DataDir(B, read_only=True)])
    assert DataLayout.decode(layout.encode()) == layout
    # A layout without read-only directories encodes as before (no new key).
    plain = DataLayout.initial([DataDir(A)])
    assert "read_only" not in cbor2.loads(plain.encode())
    assert DataLayout.decode(plain.encode()) == plain


def test_a_stored_layout_naming_unknown_read_only_dirs_is_rejected() -> None:
    obj = cbor2.loads(DataLayout.initial([DataDir(A)]).encode())
    obj["read_only"] = [5]
    with pytest.raises(ConfigError) as info:
        DataLayout.decode(cbor2.dumps(obj))
    assert info.value.field == "data_dir"


# -- a node's directories ----------------------------------------------------------------------


async def test_adding_a_directory_then_rebalancing(
    open_ops_node: Any, tmp_path: Path, meta_dir: Path, autojump_clock: Any
) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    async with open_ops_node(data_dir=a) as bm:
        hashes = await put_blocks(bm, 150)
    assert len(block_hexes(a)) == 150

    dirs = [DataDir(a, capacity="1T"), DataDir(b, capacity="1T")]
    async with open_ops_node(data_dir=dirs) as bm:
        layout = bm.data_layout
        assert layout.partitions_of(a) == layout.partitions_of(b) == 512
        assert layout.has_secondaries()
        to_move = [h for h in hashes if layout.primary_dir(h) == b]
        assert 0 < len(to_move) < 150
        # Nothing moved yet, and every block is still found (old directory = secondary).
        assert block_hexes(b) == []
        for h in hashes:
            assert await bm.has_local_block(h)
            assert await bm.get_block(h)
        # New blocks go to their primary.
        fresh = await put_blocks(bm, 40, prefix=b"fresh")
        for h in fresh:
            assert block_file(layout.primary_dir(h), h).exists()

        report = await bm.rebalance()
        assert report.moved == len(to_move)
        assert report.corrupt == report.errors == report.copied == 0
        assert report.scanned == 190 + len(to_move)  # moved ones are met again in b
        assert report.layout_updated
        assert not bm.data_layout.has_secondaries()
        for h in hashes + fresh:
            assert block_file(bm.data_layout.primary_dir(h), h).exists()
            assert await bm.get_block(h)
        assert sorted(block_hexes(a) + block_hexes(b)) == sorted(h.hex() for h in hashes + fresh)
        # A second rebalance finds nothing to do.
        again = await bm.rebalance()
        assert again.moved == 0 and not again.layout_updated

    assert not stored_layout(meta_dir).has_secondaries()
    async with open_ops_node(data_dir=dirs) as bm:
        assert not bm.data_layout.has_secondaries()
        for h in hashes:
            assert await bm.get_block(h)


async def test_rebalance_quarantines_a_corrupt_block_instead_of_moving_it(
    open_ops_node: Any, tmp_path: Path, autojump_clock: Any
) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    async with open_ops_node(data_dir=a) as bm:
        hashes = await put_blocks(bm, 60)
    dirs = [DataDir(a, capacity=1), DataDir(b, capacity=1)]
    async with open_ops_node(data_dir=dirs) as bm:
        bad = next(h for h in hashes if bm.data_layout.primary_dir(h) == b)
        flip_byte(block_file(a, bad))
        report = await bm.rebalance()
        assert report.corrupt == 1
        assert bm.metrics.corruptions == 1
        assert not block_file(b, bad).exists()
        assert block_file(a, bad).with_name(bad.hex() + ".zst.corrupted").exists()
        await trio.sleep(1)
        assert [e.hash for e in bm.list_resync_errors()] == [bad]


async def test_scrub_walks_every_directory(
    open_ops_node: Any, tmp_path: Path, autojump_clock: Any
) -> None:
    dirs = [DataDir(tmp_path / "a", capacity=1), DataDir(tmp_path / "b", capacity=2)]
    async with open_ops_node(data_dir=dirs) as bm:
        hashes = await put_blocks(bm, 50)
        victim = hashes[0]
        flip_byte(block_file(bm.data_layout.primary_dir(victim), victim))
        await bm.scrub("start")
        await wait_scrub_runs(bm)
        status = bm.scrub_status()
        assert status.blocks_checked == 50
        assert status.corruptions_found == 1


async def test_a_missing_mount_is_a_config_error_naming_data_dir(
    open_ops_node: Any, tmp_path: Path, autojump_clock: Any
) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    dirs = [DataDir(a, capacity=1), DataDir(b, capacity=1)]
    async with open_ops_node(data_dir=dirs) as bm:
        await put_blocks(bm, 10)
    assert (b / MARKER_NAME).exists()
    # The disk is not mounted: an empty mount point in its place.
    shutil.move(b, tmp_path / "b-unmounted")
    b.mkdir()
    with pytest.raises(ConfigError) as info:
        async with open_ops_node(data_dir=dirs):
            pass
    assert info.value.field == "data_dir"
    assert str(b) in str(info.value)
    # Nothing was written to the empty mount point.
    assert list(b.iterdir()) == []
    # The mount point itself is missing.
    b.rmdir()
    with pytest.raises(ConfigError) as info:
        async with open_ops_node(data_dir=dirs):
            pass
    assert info.value.field == "data_dir"
    # Mounted again: fine.
    shutil.move(tmp_path / "b-unmounted", b)
    async with open_ops_node(data_dir=dirs) as bm:
        assert len(block_hexes(a)) + len(block_hexes(b)) == 10


async def test_a_disk_swapped_between_directories_is_a_config_error(
    open_ops_node: Any, tmp_path: Path, autojump_clock: Any
) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    dirs = [DataDir(a, capacity=1), DataDir(b, capacity=1)]
    async with open_ops_node(data_dir=dirs):
        pass
    os.rename(a, tmp_path / "tmp")
    os.rename(b, a)
    os.rename(tmp_path / "tmp", b)
    with pytest.raises(ConfigError) as info:
        async with open_ops_node(data_dir=dirs):
            pass
    assert info.value.field == "data_dir"


async def test_another_nodes_directory_is_a_config_error(
    open_ops_node: Any, tmp_path: Path, autojump_clock: Any
) -> None:
    theirs = tmp_path / "theirs"
    async with open_ops_node(node_id="other", data_dir=theirs, metadata_dir=tmp_path / "m2"):
        pass
    dirs = [DataDir(tmp_path / "mine", capacity=1), DataDir(theirs, capacity=1)]
    with pytest.raises(ConfigError) as info:
        async with open_ops_node(data_dir=dirs):
            pass
    assert info.value.field == "data_dir"
    assert "other" in str(info.value)


async def test_a_read_only_directory_is_never_written(
    open_ops_node: Any, tmp_path: Path, autojump_clock: Any
) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    async with open_ops_node(data_dir=old) as bm:
        hashes = await put_blocks(bm, 60)
        plain = await bm.put_block(b"a plain one", compress=False)
        bm.incref(plain)
    # Leftovers of a crash in the read-only directory stay where they are too.
    leftover = block_file(old, hashes[0]).with_name("x.tmp0123abcd")
    leftover.write_bytes(b"partial")
    before = snapshot(old)

    dirs = [DataDir(old, read_only=True), DataDir(new, capacity="1T")]
    async with open_ops_node(data_dir=dirs) as bm:
        assert bm.data_layout.partitions_of(new) == N_PARTITIONS
        for h in [*hashes, plain]:
            assert await bm.get_block(h)
        fresh = await put_blocks(bm, 20, prefix=b"fresh")
        assert set(block_hexes(new)) == {h.hex() for h in fresh}
        # Putting a block held only by the read-only directory writes it anew.
        await bm.put_block(b"block-0-")
        assert hashes[0].hex() in block_hexes(new)
        # Scrub reads it all, and changes nothing in it even for a corrupt copy.
        await bm.scrub("start")
        await wait_scrub_runs(bm)
        assert bm.scrub_status().blocks_checked == 61 + 21
        report = await bm.rebalance()
        assert report.copied == 60  # hashes[0] was in the primary already
        assert report.moved == 0
        assert not bm.data_layout.has_secondaries()
        assert bm.data_layout.read_only_dirs == {old}
        for h in [*hashes, plain]:
            assert block_file(new, h, compressed=h != plain).exists()
            assert await bm.get_block(h)
    assert snapshot(old) == before


async def test_a_corrupt_copy_in_a_read_only_directory_is_reported_not_touched(
    open_ops_node: Any, tmp_path: Path, autojump_clock: Any
) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    async with open_ops_node(data_dir=old) as bm:
        hashes = await put_blocks(bm, 5)
    flip_byte(block_file(old, hashes[2]))
    before = snapshot(old)
    dirs = [DataDir(old, read_only=True), DataDir(new, capacity=1)]
    async with open_ops_node(data_dir=dirs) as bm:
        await bm.scrub("start")
        await wait_scrub_runs(bm)
        assert bm.scrub_status().corruptions_found == 1
        report = await bm.rebalance()
        assert report.corrupt == 1 and report.copied == 4
        assert not block_file(new, hashes[2]).exists()
    assert snapshot(old) == before


async def test_a_read_only_directory_must_exist(
    open_ops_node: Any, tmp_path: Path, autojump_clock: Any
) -> None:
    dirs = [DataDir(tmp_path / "gone", read_only=True), DataDir(tmp_path / "new", capacity=1)]
    with pytest.raises(ConfigError) as info:
        async with open_ops_node(data_dir=dirs):
            pass
    assert info.value.field == "data_dir"
    assert not (tmp_path / "gone").exists()


# -- moving one block (the rebalance step) -------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> BlockStore:
    layout = DataLayout.initial([DataDir(tmp_path / "p")]).update(
        [DataDir(tmp_path / "p", capacity=1), DataDir(tmp_path / "q", capacity=1)]
    )
    for root in layout.dirs:
        root.mkdir()
    return BlockStore(
        layout,
        compression=True,
        fsync=True,
        limiter=trio.CapacityLimiter(1),
        max_block_size=1 << 20,
    )


def _place(root: Path, data: bytes, *, compressed: bool, mtime: int = 10**18) -> Hash:
    from trioblock import blake2sum

    h = blake2sum(data)
    path = block_file(root, h, compressed=compressed)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_block(data, 3 if compressed else None).payload)
    os.utime(path, ns=(mtime, mtime))
    return h


def _loc(store: BlockStore, root: Path, h: Hash) -> Any:
    from trioblock._storage.blockfiles import iter_block_files

    (loc,) = [loc for loc in iter_block_files(root) if loc.hash == h]
    return loc


def test_move_keeps_mtime_and_removes_the_source(store: BlockStore, tmp_path: Path) -> None:
    p, q = tmp_path / "p", tmp_path / "q"
    h = _place(p, b"x" * 1000, compressed=True, mtime=1_700_000_000_000_000_000)
    loc = _loc(store, p, h)
    assert move_block_sync(store, loc, q, remove_source=True) is MoveOutcome.MOVED
    moved = block_file(q, h)
    assert moved.stat().st_mtime_ns == 1_700_000_000_000_000_000
    assert not loc.path.exists()
    assert [f.name for f in moved.parent.iterdir()] == [moved.name]  # no temp left


def test_move_compressed_replaces_a_plain_copy_in_the_primary(
    store: BlockStore, tmp_path: Path
) -> None:
    p, q = tmp_path / "p", tmp_path / "q"
    h = _place(p, b"y" * 1000, compressed=True)
    _place(q, b"y" * 1000, compressed=False)
    assert move_block_sync(store, _loc(store, p, h), q, remove_source=True) is MoveOutcome.MOVED
    assert block_file(q, h).exists()
    assert not block_file(q, h, compressed=False).exists()


def test_move_drops_the_source_when_the_primary_has_a_better_copy(
    store: BlockStore, tmp_path: Path
) -> None:
    p, q = tmp_path / "p", tmp_path / "q"
    h = _place(p, b"z" * 1000, compressed=False, mtime=2 * 10**18)
    _place(q, b"z" * 1000, compressed=True, mtime=10**18)
    outcome = move_block_sync(store, _loc(store, p, h), q, remove_source=True)
    assert outcome is MoveOutcome.DROPPED
    assert not block_file(p, h, compressed=False).exists()
    assert block_file(q, h).stat().st_mtime_ns == 2 * 10**18  # the newer "written" time


def test_move_refuses_a_corrupt_copy(store: BlockStore, tmp_path: Path) -> None:
    p, q = tmp_path / "p", tmp_path / "q"
    h = _place(p, b"w" * 1000, compressed=True)
    flip_byte(block_file(p, h))
    assert move_block_sync(store, _loc(store, p, h), q, remove_source=True) is MoveOutcome.CORRUPT
    assert block_file(p, h).exists()
    assert not block_file(q, h).exists()


def test_move_of_a_vanished_copy(store: BlockStore, tmp_path: Path) -> None:
    p, q = tmp_path / "p", tmp_path / "q"
    h = _place(p, b"v" * 1000, compressed=True)
    loc = _loc(store, p, h)
    loc.path.unlink()
    assert move_block_sync(store, loc, q, remove_source=True) is MoveOutcome.GONE


async def test_garbage_collection_leaves_read_only_directories_alone(
    open_ops_node: Any, tmp_path: Path, autojump_clock: Any
) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    async with open_ops_node(data_dir=old) as bm:
        await put_blocks(bm, 10, incref=False)  # unreferenced: garbage once old enough
    before = snapshot(old)
    dirs = [DataDir(old, read_only=True), DataDir(new, capacity=1)]
    async with open_ops_node(data_dir=dirs, gc_delay=60.0) as bm:
        report = await bm.repair()
        assert report.disk_blocks == 10
        await trio.sleep(300)
        assert bm.resync_errors_len() == 0
    assert snapshot(old) == before
