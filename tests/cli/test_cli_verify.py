"""``trioblock verify-dir``: offline verification of data directories, ours or Garage's."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import zstandard
from cli_kit import Result, run_cli, write_node_files

from trioblock import blake2sum


def write_blocks(root: Path, blocks: list[bytes]) -> list[Path]:
    """Block files as Garage and trioblock lay them out; odd ones zstd-compressed."""
    paths = []
    for i, data in enumerate(blocks):
        hx = blake2sum(data).hex()
        sub = root / hx[:2] / hx[2:4]
        sub.mkdir(parents=True, exist_ok=True)
        if i % 2:
            path = sub / (hx + ".zst")
            path.write_bytes(zstandard.ZstdCompressor(write_checksum=True).compress(data))
        else:
            path = sub / hx
            path.write_bytes(data)
        paths.append(path)
    return paths


def test_a_clean_directory_exits_0(tmp_path: Path) -> None:
    write_blocks(tmp_path, [b"block %d " % i * 100 for i in range(6)])
    result = run_cli("verify-dir", str(tmp_path), "--json")
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["clean"] is True
    assert report["directories"][0]["ok"] == 6


def test_a_corrupt_block_exits_1_and_is_named(cli: Callable[..., Result], tmp_path: Path) -> None:
    paths = write_blocks(tmp_path, [b"block %d " % i * 100 for i in range(4)])
    raw = bytearray(paths[1].read_bytes())
    raw[len(raw) // 2] ^= 0x01
    paths[1].write_bytes(bytes(raw))
    result = cli("verify-dir", str(tmp_path))
    assert result.code == 1
    assert f"corrupt: {paths[1]}" in result.stdout.replace("\n", "")
    report = cli("verify-dir", str(tmp_path), "--json").json()
    assert report["directories"][0]["corrupt"] == [str(paths[1])]
    assert report["directories"][0]["ok"] == 3


def test_config_names_the_directories(cli: Callable[..., Result], tmp_path: Path) -> None:
    config, _ = write_node_files(tmp_path, 1)
    write_blocks(tmp_path / "data", [b"configured"])
    result = cli("verify-dir", "--config", str(config), "--json")
    assert result.code == 0, result.stderr
    assert result.json()["directories"][0]["path"] == str(tmp_path / "data")


def test_a_missing_directory_is_a_usage_error(cli: Callable[..., Result], tmp_path: Path) -> None:
    assert cli("verify-dir", str(tmp_path / "nope")).code == 2
    assert cli("verify-dir").code == 2
