"""The block store's count of copies and bytes (``BlockStore.stored``), and its rebuild.

The rebuild lists a subdirectory while writes may change it; these tests make a change
land exactly inside a listing, in both orders, and check that the count stays exact.
"""

from __future__ import annotations

import errno
import itertools
import os
from pathlib import Path

import pytest
import trio
from faulty_disk import FaultyDisk

from trioblock import DataDir, StoredBlocks, blake2sum
from trioblock._core.block import encode_block
from trioblock._core.datalayout import DataLayout
from trioblock._core.hashing import Hash
from trioblock._storage.blockfiles import BlockStore
from trioblock._storage.paths import BlockLocation, block_path

NOW_MSEC = 1_700_000_000_000


def make_store(root: Path, disk: FaultyDisk | None = None) -> BlockStore:
    return BlockStore(
        DataLayout.initial([DataDir(root)]),
        compression=True,
        fsync=False,
        limiter=trio.CapacityLimiter(2),
        max_block_size=1 << 20,
        disk=disk,
    )


def blocks_in_aa(first: int, n: int) -> list[tuple[Hash, bytes]]:
    """``n`` distinct contents whose hashes start with byte ``first``."""
    found = []
    for i in itertools.count():
        data = f"block {i} of a crowded directory".encode() * 20
        h = blake2sum(data)
        if h[0] == first:
            found.append((h, data))
            if len(found) == n:
                return found
    raise AssertionError("unreachable")


def on_disk(root: Path) -> tuple[int, int]:
    files = [p for p in root.rglob("*") if p.is_file() and len(p.name.split(".")[0]) == 64]
    files = [p for p in files if p.suffix in ("", ".zst")]
    return len(files), sum(p.stat().st_size for p in files)


def write(store: BlockStore, h: Hash, data: bytes) -> None:
    store.write_sync(h, encode_block(data, 1), NOW_MSEC)


async def test_writes_and_removals_are_counted_at_once(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    (h1, d1), (h2, d2) = blocks_in_aa(0, 2)
    write(store, h1, d1)
    write(store, h2, d2)
    write(store, h2, d2)  # kept: no change
    assert store.stored.figures() == StoredBlocks(*on_disk(tmp_path), exact=False)
    loc = store.find_sync(h1)
    assert loc is not None
    assert store.detach_now(loc) is not None
    assert store.stored.figures().blocks == 1
    assert await store.stored.rebuild(store.limiter) == StoredBlocks(*on_disk(tmp_path), True)


async def test_a_write_finishing_inside_a_listing_is_not_lost(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    existing, racing = blocks_in_aa(7, 2)
    write(store, *existing)
    tally = store.stored
    listing = tally.list_range_sync

    def list_then_write(lo: int, hi: int, budget: int) -> object:
        result = listing(lo, hi, budget)
        if lo == 0x0700:  # the write lands after the listing of "07", before it is taken
            write(store, *racing)
        return result

    tally.list_range_sync = list_then_write  # type: ignore[method-assign]
    figures = await tally.rebuild(store.limiter)
    assert on_disk(tmp_path)[0] == 2
    assert figures == StoredBlocks(*on_disk(tmp_path), exact=True)


async def test_a_change_in_flight_when_a_listing_starts_is_not_doubled(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    (h, data), (h2, d2) = blocks_in_aa(9, 2)
    write(store, h2, d2)
    tally = store.stored
    listing = tally.list_range_sync
    # A write that has begun (its file already in place) when the listing of its
    # directory starts and ends after it: the listing sees the file, the write adds it.
    payload = encode_block(data, 1).payload

    def list_inside_a_write(lo: int, hi: int, budget: int) -> object:
        if lo == 0x0800:  # the write begins and puts its file in place...
            tally.begin(h)
            path = block_path(tmp_path, h, encode_block(data, 1).header)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(payload)
        if lo == 0x0A00:  # ... and ends once "09" has been listed
            tally.end(h)
        return listing(lo, hi, budget)

    tally.list_range_sync = list_inside_a_write  # type: ignore[method-assign]
    figures = await tally.rebuild(store.limiter)
    assert on_disk(tmp_path)[0] == 2
    assert figures == StoredBlocks(*on_disk(tmp_path), exact=True)


async def test_overlapping_changes_of_one_block_count_once(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    ((h, data),) = blocks_in_aa(3, 1)
    await store.stored.rebuild(store.limiter)
    # A purge-like detach while a write of the same block is in flight elsewhere.
    store.stored.begin(h)
    write(store, h, data)
    loc = store.find_sync(h)
    assert isinstance(loc, BlockLocation)
    store.detach_now(loc)
    write(store, h, data)
    store.stored.end(h)
    assert store.stored.figures() == StoredBlocks(*on_disk(tmp_path), exact=True)
    assert store.stored.figures().blocks == 1


@pytest.mark.parametrize("err", [errno.EACCES, errno.EIO])
async def test_an_unreadable_directory_leaves_an_estimate(tmp_path: Path, err: int) -> None:
    disk = FaultyDisk()
    store = make_store(tmp_path, disk)
    ((h, data),) = blocks_in_aa(5, 1)
    write(store, h, data)
    # An ``aa`` directory that cannot be listed (root ignores chmod: the disk refuses).
    disk.fail("list_dir", err)
    figures = await store.stored.rebuild(store.limiter)
    assert not figures.exact
    assert figures.blocks == 1  # the estimate kept from the writes


async def test_an_empty_store_is_counted_in_one_trip(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    trips = []
    trip = store.stored.rebuild_trip_sync

    def counting(start: int, budget: int) -> tuple[int, list[int]]:
        trips.append(start)
        return trip(start, budget)

    store.stored.rebuild_trip_sync = counting  # type: ignore[method-assign]
    assert await store.stored.rebuild(store.limiter) == StoredBlocks(0, 0, exact=True)
    assert trips == [0]


async def test_a_crowded_store_is_listed_in_bounded_trips(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Trips stop inside an ``aa`` once they have seen their share of files, and the
    next one goes on from there; copies in two data directories all count."""
    a, b = tmp_path / "a", tmp_path / "b"
    store = BlockStore(
        DataLayout.initial([DataDir(a, capacity=100), DataDir(b, capacity=100)]),
        compression=True,
        fsync=False,
        limiter=trio.CapacityLimiter(2),
        max_block_size=1 << 20,
    )
    crowded = blocks_in_aa(0x42, 12)
    for i, (h, data) in enumerate(crowded):
        block = encode_block(data, 1)
        path = block_path(a if i % 2 else b, h, block.header)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(block.payload)
    (a / "42" / "not-a-bb").mkdir()
    monkeypatch.setattr("trioblock._storage.stored.FILES_PER_TRIP", 3)
    trips = []
    trip = store.stored.rebuild_trip_sync

    def counting(start: int, budget: int) -> tuple[int, list[int]]:
        trips.append(start)
        return trip(start, budget)

    store.stored.rebuild_trip_sync = counting  # type: ignore[method-assign]
    figures = await store.stored.rebuild(store.limiter)
    on_a, on_b = on_disk(a), on_disk(b)
    assert figures == StoredBlocks(on_a[0] + on_b[0], on_a[1] + on_b[1], exact=True)
    assert figures.blocks == 12
    assert len(trips) >= 4  # 12 files, 3 per trip
    assert trips == sorted(trips)


def test_every_kind_of_write_keeps_the_count_exact(tmp_path: Path) -> None:
    """New blocks (in new and in existing subdirectories), re-puts, a compressed copy
    replacing a plain one, and something that is not a file under a block's name."""
    store = make_store(tmp_path)
    (h1, d1), (h2, d2), (h3, d3), (h4, d4) = blocks_in_aa(0x21, 4)

    def check() -> None:
        figures = store.stored.figures()
        assert (figures.blocks, figures.bytes) == on_disk(tmp_path)

    write(store, h1, d1)  # a new aa/bb
    check()
    write(store, h1, d1)  # kept
    check()
    store.write_sync(h2, encode_block(d2, None), NOW_MSEC)  # plain
    check()
    write(store, h2, d2)  # compressed replaces plain
    check()
    assert on_disk(tmp_path)[0] == 2
    fifo = block_path(tmp_path, h3, encode_block(d3, 1).header)
    fifo.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(fifo)
    write(store, h3, d3)  # the FIFO is set aside, the copy written
    check()
    assert fifo.is_file()
    (tmp_path / f"{h4[0]:02x}" / f"{h4[1]:02x}").mkdir(parents=True, exist_ok=True)
    write(store, h4, d4)  # an existing, empty aa/bb
    check()
    assert store.stored.figures().blocks == 4


async def test_a_write_superseding_a_copy_in_another_directory_counts_once(
    tmp_path: Path,
) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    layout = DataLayout.initial([DataDir(a)]).update(
        [DataDir(a, capacity=100), DataDir(b, capacity=300)]
    )  # ``a`` stays a secondary of the partitions moved to ``b``
    store = BlockStore(
        layout,
        compression=True,
        fsync=False,
        limiter=trio.CapacityLimiter(2),
        max_block_size=1 << 20,
    )
    found = [(h, d) for h, d in blocks_in_aa(0x33, 40) if len(layout.candidate_roots(h)) > 1]
    h, data = found[0]
    secondary = Path(layout.candidate_roots(h)[1])
    plain = encode_block(data, None)
    path = block_path(secondary, h, plain.header)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(plain.payload)
    assert await store.stored.rebuild(store.limiter) == StoredBlocks(1, len(plain.payload), True)
    write(store, h, data)  # the compressed copy goes to the primary, the plain one goes
    assert not path.exists()
    on_a, on_b = on_disk(a), on_disk(b)
    assert on_a[0] + on_b[0] == 1
    assert store.stored.figures() == StoredBlocks(on_a[0] + on_b[0], on_a[1] + on_b[1], True)
