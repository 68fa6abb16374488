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


def test_links_fifos_and_directories_in_a_blocks_place_are_reported_never_read(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "valid").write_bytes(b"data")
    paths = garage_dir(data, [b"data", b"elsewhere", b"fifo", b"ok"], compressed=set())
    paths[0].unlink()
    paths[0].mkdir()  # a directory where a block should be
    paths[1].unlink()
    paths[1].symlink_to(outside / "valid")
    paths[2].unlink()
    os.mkfifo(paths[2])  # reading it would block for good
    report = verify_dir(data)
    assert (report.ok, report.corrupt, report.unreadable, report.other_files) == (1, [], [], [])
    assert sorted(report.not_regular) == sorted(
        [(paths[0], "a directory"), (paths[1], "a symbolic link"), (paths[2], "a FIFO")]
    )
    assert not report.clean


def test_a_linked_subdirectory_is_reported_not_entered(tmp_path: Path) -> None:
    data, outside = tmp_path / "data", tmp_path / "outside"
    (path,) = garage_dir(outside, [b"data"], compressed=set())
    data.mkdir()
    aa = path.parent.parent.name
    (data / aa).symlink_to(outside / aa, target_is_directory=True)
    report = verify_dir(data)
    assert report.blocks == 0
    assert report.not_regular == [(data / aa, "a symbolic link")]


def test_non_hex_directories_are_reported_not_walked(tmp_path: Path) -> None:
    garage_dir(tmp_path, [b"data"], compressed=set())
    (tmp_path / "zz" / "qq").mkdir(parents=True)
    (tmp_path / "zz" / "qq" / "file").write_bytes(b"x")
    hx = blake2sum(b"data").hex()
    (tmp_path / hx[:2] / "qq").mkdir()
    seen: list[float] = []
    report = verify_dir(tmp_path, progress=lambda f, r: seen.append(f))
    assert report.ok == 1 and report.clean
    assert sorted(report.other_files) == sorted([tmp_path / "zz", tmp_path / hx[:2] / "qq"])
    assert seen == sorted(seen)


def test_a_marker_temp_file_at_the_top_is_reported(tmp_path: Path) -> None:
    garage_dir(tmp_path, [b"data"], compressed=set())
    leftover = tmp_path / "trioblock-marker.tmp0123abcd"
    leftover.write_text("n1:0\n")
    (tmp_path / "trioblock-marker").write_text("n1:0\n")
    (tmp_path / "lost+found").mkdir()
    report = verify_dir(tmp_path)
    assert report.other_files == [leftover]


def _refuse_listing(monkeypatch: pytest.MonkeyPatch, suffix: str) -> None:
    """``os.scandir`` fails with EACCES on one directory (``chmod 0`` does not stop root)."""
    real = os.scandir

    def scandir(path: Any = ".") -> Any:
        where = os.readlink(f"/proc/self/fd/{path}") if isinstance(path, int) else str(path)
        if where.endswith(suffix):
            raise PermissionError(13, "Permission denied", where)
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)


def test_an_unreadable_directory_is_reported_and_the_walk_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = garage_dir(tmp_path, [b"one", b"two", b"three"], compressed=set())
    bad = paths[0].parent
    _refuse_listing(monkeypatch, f"/{bad.parent.name}/{bad.name}")
    report = verify_dir(tmp_path)
    monkeypatch.undo()
    assert report.ok == len({p.parent for p in paths} - {bad})
    assert [p for p, _ in report.unreadable_dirs] == [bad]
    assert "PermissionError" in report.unreadable_dirs[0][1]
    assert not report.clean


@pytest.mark.skipif(os.geteuid() == 0, reason="root lists directories whatever their mode")
def test_a_chmod_0_directory_is_reported(tmp_path: Path) -> None:
    (path,) = garage_dir(tmp_path, [b"data"], compressed=set())
    path.parent.chmod(0)
    try:
        report = verify_dir(tmp_path)
    finally:
        path.parent.chmod(0o755)
    assert [p for p, _ in report.unreadable_dirs] == [path.parent]


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


def test_the_cli_reports_odd_entries_without_a_traceback(tmp_path: Path) -> None:
    import subprocess
    import sys

    paths = garage_dir(tmp_path, [b"data", b"fifo"], compressed=set())
    (tmp_path / "zz" / "qq").mkdir(parents=True)
    (tmp_path / "zz" / "qq" / "file").write_bytes(b"x")
    paths[1].unlink()
    os.mkfifo(paths[1])
    done = subprocess.run(
        [sys.executable, "-m", "trioblock", "verify-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
    )
    assert "Traceback" not in done.stderr
    assert done.returncode == 1
    assert f"not a block file: {paths[1]} is a FIFO" in done.stdout
