"""Helpers shared by the tests of the operator workers (imported by module name)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from trioblock._storage.blockfiles import iter_block_files


def block_file(data_dir: Path, h: bytes, *, compressed: bool = True) -> Path:
    """Where the DESIGN says the block file of ``h`` lives."""
    hx = bytes(h).hex()
    return data_dir / hx[:2] / hx[2:4] / (hx + (".zst" if compressed else ""))


def flip_byte(path: Path, offset: int | None = None) -> None:
    """Corrupt one byte of a file in place (the middle one by default)."""
    raw = bytearray(path.read_bytes())
    i = len(raw) // 2 if offset is None else offset
    raw[i] ^= 0xFF
    path.write_bytes(bytes(raw))


async def wait_scrub_runs(bm: Any, n: int = 1, within: float = 10 * 86400) -> None:
    """Wait (``within`` seconds of virtual time) until ``n`` scrub runs have completed
    since the node opened."""
    with trio.fail_after(within):
        await bm.wait_scrub_runs(n)


def block_hexes(root: Path) -> list[str]:
    return [loc.hash.hex() for loc in iter_block_files(root)]


async def put_blocks(
    bm: Any, n: int, *, prefix: bytes = b"block", incref: bool = True
) -> list[Any]:
    hashes = []
    for i in range(n):
        h = await bm.put_block(prefix + b"-%d-" % i + bytes(range(i % 50)) * 20)
        if incref:
            bm.incref(h)
        hashes.append(h)
    return hashes
