"""Single-thread cost of the block store's hot calls (µs per call, best of 7 rounds).

4 KiB random blocks on a fresh data directory, no fsync: ``read_verified_sync`` of a
stored block (lookup, open, read, zstd decode, BLAKE2b), ``find_sync`` of a stored and
of an absent block, and ``write_sync`` of a new block (the durable write without its
fsyncs). Measures the library found on ``sys.path``, so two commits can be compared
side by side (``PYTHONPATH=<other checkout> python benchmarks/storage_micro.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import trio

import trioblock
from trioblock._core.block import encode_block
from trioblock._core.datalayout import DataDir, DataLayout
from trioblock._core.hashing import blake2sum
from trioblock._storage.blockfiles import BlockStore


def make_store(root: Path) -> BlockStore:
    root.mkdir(parents=True, exist_ok=True)
    return BlockStore(
        DataLayout.initial([DataDir(root)]),
        compression=True,
        fsync=False,
        limiter=trio.CapacityLimiter(2),
        max_block_size=1 << 20,
    )


def best_of(fn, items, rounds: int = 7) -> float:
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        for item in items:
            fn(item)
        best = min(best, (time.perf_counter() - t) / len(items))
    return best * 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-n", type=int, default=2000, help="blocks (default 2000)")
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="trioblock-micro-", dir="/var/tmp"))
    try:
        store = make_store(tmp / "data")
        datas = [os.urandom(4096) for _ in range(args.n)]
        hashes = [blake2sum(d) for d in datas]
        blocks = [encode_block(d, 1) for d in datas]
        now = int(time.time() * 1000)
        for h, b in zip(hashes, blocks, strict=True):
            store.write_sync(h, b, now)
        absent = [blake2sum(b"absent %d" % i) for i in range(args.n)]
        out = {
            "library": os.path.dirname(trioblock.__file__),
            "read_verified_4k_us": best_of(store.read_verified_sync, hashes),
            "find_present_us": best_of(store.find_sync, hashes),
            "find_absent_us": best_of(store.find_sync, absent),
        }
        # New writes: a fresh store per round, its aa/bb directories made beforehand.
        rounds = []
        for r in range(5):
            root = tmp / f"w{r}"
            ws = make_store(root)
            for h in hashes:
                (root / f"{h[0]:02x}" / f"{h[1]:02x}").mkdir(parents=True, exist_ok=True)
            t = time.perf_counter()
            for h, b in zip(hashes, blocks, strict=True):
                ws.write_sync(h, b, now)
            rounds.append((time.perf_counter() - t) / len(hashes) * 1e6)
            shutil.rmtree(root)
        out["write_new_4k_us"] = min(rounds)
        for k, v in out.items():
            print(f"{k:24} {v:.1f}" if isinstance(v, float) else f"{k:24} {v}")
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=2))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
