"""``verify_dir``: offline verification of a data directory, ours or a Garage node's."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import zstandard
from ops_kit import block_file, flip_byte, put_blocks

from trioblock import blake2sum
from trioblock._storage.verify import VerifyReport, verify_dir


def garage_dir(root: Path, blocks: list[bytes], *, compressed: set[int]) -> list[Path]:
    """A data directory as Garage writes it: no marker, aa/bb/<hex>[.zst]."""
    paths = []
    for i, data in enumerate(blocks):
        hx = blake2sum(data).hex()
        sub = root / hx[:2] / hx[2:4]
        sub.mkdir(parents=True, exist_ok=True)
        if i in compressed:
            path = sub / (hx + ".zst")
            # Garage's frames may lack a content checksum: the hash check suffices.
            path.write_bytes(zstandard.ZstdCompressor(level=3).compress(data))
        else:
            path = sub / hx
            path.write_bytes(data)
        paths.append(path)
    return paths


def test_a_garage_directory_verifies(tmp_path: Path) -> None:
    blocks = [os.urandom(100) * (i + 1) for i in range(12)]
    garage_dir(tmp_path, blocks, compressed={1, 3, 5, 7})
    report = verify_dir(tmp_path)
    assert report.ok == 12
    assert report.clean
    assert report.blocks == 12
    assert report.bytes_checked == sum(f.stat().st_size for f in tmp_path.rglob("*") if f.is_file())
    assert report.other_files == []


def test_corrupt_and_other_files_are_reported(tmp_path: Path) -> None:
    blocks = [b"block %d " % i * 50 for i in range(10)]
    paths = garage_dir(tmp_path, blocks, compressed={0, 1, 2})
    flip_byte(paths[1])  # compressed
    flip_byte(paths[6])  # plain
    # Truncated frame, extra bytes after the frame.
    paths[2].write_bytes(paths[2].read_bytes()[:-3])
    with open(paths[0], "ab") as f:
        f.write(b"junk")
    junk = [
        paths[3].with_name(paths[3].name + ".corrupted"),
        paths[4].with_name(paths[4].name + ".tmp0123abcd"),
        paths[5].parent / "README",
    ]
    for p in junk:
        p.write_bytes(b"x")
    # A block-named file in the wrong subdirectory is not a block.
    misplaced = tmp_path / "00" / "00" / paths[7].name
    misplaced.parent.mkdir(parents=True)
    misplaced.write_bytes(blocks[7])
    (tmp_path / "trioblock-marker").write_text("n1:abc\n")  # top level: not looked at
    report = verify_dir(str(tmp_path))
    assert sorted(report.corrupt) == sorted([paths[0], paths[1], paths[2], paths[6]])
    assert report.ok == 6
    assert sorted(report.other_files) == sorted([*junk, misplaced])
    assert not report.clean


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_files_are_reported(tmp_path: Path) -> None:
    paths = garage_dir(tmp_path, [b"data", b"more"], compressed=set())
    paths[0].chmod(0)
    try:
        report = verify_dir(tmp_path)
    finally:
        paths[0].chmod(0o644)
    assert report.ok == 1
    assert [p for p, _ in report.unreadable] == [paths[0]]
    assert "PermissionError" in report.unreadable[0][1]
    assert not report.clean


def test_symlinks_and_directories_are_not_followed(tmp_path: Path) -> None:
    (path,) = garage_dir(tmp_path, [b"data"], compressed=set())
    path.unlink()
    path.mkdir()  # a directory where a block should be
    hx = blake2sum(b"elsewhere").hex()
    sub = tmp_path / hx[:2] / hx[2:4]
    sub.mkdir(parents=True, exist_ok=True)
    (sub / hx).symlink_to(tmp_path / "nowhere")
    report = verify_dir(tmp_path)
    assert (report.ok, report.corrupt, report.unreadable, report.other_files) == (0, [], [], [])


def test_progress_is_reported_in_hash_order(tmp_path: Path) -> None:
    garage_dir(tmp_path, [os.urandom(64) for _ in range(50)], compressed=set())
    seen: list[tuple[float, int]] = []

    def progress(fraction: float, report: VerifyReport) -> None:
        seen.append((fraction, report.ok))

    report = verify_dir(tmp_path, progress=progress)
    assert report.ok == 50
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions)
    assert all(0.0 <= f <= 1.0 for f in fractions)
    assert seen[-1] == (1.0, 50)
    assert [n for _, n in seen[:-1]] == list(range(1, 51))


def test_a_missing_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        verify_dir(tmp_path / "nope")


def test_oversized_blocks_count_as_corrupt(tmp_path: Path) -> None:
    (path,) = garage_dir(tmp_path, [b"z" * 5000], compressed={0})
    assert verify_dir(tmp_path, max_block_size=1000).corrupt == [path]


async def test_a_nodes_directory_verifies_and_matches_scrub(
    open_ops_node: Any, data_dir: Path, autojump_clock: Any
) -> None:
    async with open_ops_node() as bm:
        hashes = await put_blocks(bm, 30)
        plain = await bm.put_block(b"plain", compress=False)
    flip_byte(block_file(data_dir, hashes[4]))
    report = verify_dir(data_dir)
    assert report.ok == 30
    assert report.corrupt == [block_file(data_dir, hashes[4])]
    assert block_file(data_dir, plain, compressed=False).exists()
