"""The store keeps each data directory's root open and reaches ``aa/bb`` from it: what
changes below the root while the store lives is seen at once, and no link is followed."""

from __future__ import annotations

import gc
import os
import shutil
from pathlib import Path

import pytest
import trio

from trioblock import DataDir, blake2sum
from trioblock._core.block import encode_block
from trioblock._core.datalayout import DataLayout
from trioblock._storage import RealDisk
from trioblock._storage.blockfiles import BlockStore, WriteOutcome

DATA = b"kept roots\n" * 100
H = blake2sum(DATA)
HX = H.hex()
NOW_MSEC = 1_700_000_000_000


def make_store(root: Path, disk: RealDisk | None = None) -> BlockStore:
    root.mkdir(parents=True, exist_ok=True)
    return BlockStore(
        DataLayout.initial([DataDir(root)]),
        compression=True,
        fsync=True,
        limiter=trio.CapacityLimiter(2),
        max_block_size=1 << 20,
        disk=disk,
    )


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.fixture(params=["openat2", "walk"])
def how(request: pytest.FixtureRequest) -> RealDisk:
    """Every test runs with ``openat2`` and with the walk used where it is missing."""
    return RealDisk(openat2=request.param == "openat2")


def test_a_subdirectory_swapped_for_a_link_after_use_is_never_entered(
    tmp_path: Path, how: RealDisk
) -> None:
    data = tmp_path / "data"
    outside = tmp_path / "outside"
    store = make_store(data, how)
    assert store.write_sync(H, encode_block(DATA, 1), NOW_MSEC) is WriteOutcome.WRITTEN
    assert store.read_verified_sync(H) is not None
    # The real aa/bb moves out of the data directory; a link to it takes its place.
    outside.mkdir()
    os.rename(data / HX[:2] / HX[2:4], outside / HX[2:4])
    (data / HX[:2] / HX[2:4]).symlink_to(outside / HX[2:4], target_is_directory=True)
    before = snapshot(outside)
    assert store.find_sync(H) is None
    assert store.read_verified_sync(H) is None
    with pytest.raises(OSError, match="never follows links"):
        store.write_sync(H, encode_block(DATA, 1), NOW_MSEC + 1)
    assert snapshot(outside) == before


def test_a_subdirectory_removed_and_made_again_is_used_afresh(
    tmp_path: Path, how: RealDisk
) -> None:
    data = tmp_path / "data"
    store = make_store(data, how)
    store.write_sync(H, encode_block(DATA, 1), NOW_MSEC)
    shutil.rmtree(data / HX[:2])
    assert store.find_sync(H) is None
    assert store.write_sync(H, encode_block(DATA, 1), NOW_MSEC) is WriteOutcome.WRITTEN
    found = store.read_verified_sync(H)
    assert found is not None and found[0] == DATA
    assert (data / HX[:2] / HX[2:4] / (HX + ".zst")).is_file()


def test_a_data_directory_removed_and_made_again_is_written_afresh(
    tmp_path: Path, how: RealDisk
) -> None:
    """The root's kept descriptor names the removed directory: a write reopens the root
    by path instead of failing (or writing into the removed one)."""
    data = tmp_path / "data"
    store = make_store(data, how)
    other = blake2sum(b"other")
    store.write_sync(other, encode_block(b"other", 1), NOW_MSEC)
    shutil.rmtree(data)
    data.mkdir()
    assert store.write_sync(H, encode_block(DATA, 1), NOW_MSEC) is WriteOutcome.WRITTEN
    assert (data / HX[:2] / HX[2:4] / (HX + ".zst")).is_file()
    found = store.read_verified_sync(H)
    assert found is not None and found[0] == DATA
    assert store.find_sync(other) is None


def test_a_link_in_place_of_the_block_file_is_skipped_not_followed(
    tmp_path: Path, how: RealDisk
) -> None:
    data = tmp_path / "data"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "valid").write_bytes(encode_block(DATA, 1).payload)
    store = make_store(data, how)
    (data / HX[:2] / HX[2:4]).mkdir(parents=True)
    (data / HX[:2] / HX[2:4] / (HX + ".zst")).symlink_to(outside / "valid")
    assert store.find_sync(H) is None
    assert store.read_verified_sync(H) is None
    assert store.write_sync(H, encode_block(DATA, 1), NOW_MSEC) is WriteOutcome.WRITTEN
    assert (outside / "valid").read_bytes() == encode_block(DATA, 1).payload
    assert (data / HX[:2] / HX[2:4] / (HX + ".zst")).is_file()
    assert (data / HX[:2] / HX[2:4] / (HX + ".zst.corrupted")).is_symlink()


def test_descriptors_are_closed_with_the_store(tmp_path: Path) -> None:
    gc.collect()  # earlier tests' stores (in reference cycles) closed now, not meanwhile
    fds = set(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None
    if fds is None:
        pytest.skip("no /proc/self/fd here")
    store = make_store(tmp_path / "data")
    store.write_sync(H, encode_block(DATA, 1), NOW_MSEC)
    assert store.read_verified_sync(H) is not None
    assert len(os.listdir("/proc/self/fd")) > len(fds)
    del store
    assert len(os.listdir("/proc/self/fd")) == len(fds)
