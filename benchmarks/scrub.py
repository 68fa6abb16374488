#!/usr/bin/env python
"""Scrub throughput at tranquility 0, beside a plain loop verifying the same files.

    python benchmarks/scrub.py                  # ~1-2 minutes, 5 repetitions, best kept
    python benchmarks/scrub.py --quick          # CI-sized (< 30 s), 3 repetitions
    python benchmarks/scrub.py --json out.json --profile

What one row measures. A node's data directory is filled (untimed) with distinct blocks
through ``bm.put_block`` (compression level 1, so every file is ``.zst``; ``data_fsync``
off, then ``os.sync()``) and the node is closed. Then, alternately (A B, then B A, ...),
each side is timed over the same files, keeping its best wall time:

- **scrub**: the node is reopened (untimed) with ``disable_scrub=True`` (no automatic
  run); ``await bm.scrub(0)`` sets tranquility 0 (untimed); the clock runs from
  ``await bm.scrub("start")`` until ``await bm.wait_scrub_runs(1)`` returns (after
  the node's start-up background work has finished), and
  ``scrub_status()`` must then say ``finished`` with every block checked and no
  corruption.
- **loop**: one plain Python thread walks the same data directory in hash order
  (``os.scandir``, names sorted at each of the three levels), reads each file whole,
  zstd-decompresses ``.zst`` files (one shot, a reused ``ZstdDecompressor``),
  BLAKE2b-512-hashes the plaintext and compares the first 32 bytes with the file name.

Ratio = scrub blocks/s / loop blocks/s; the issue's target is >= 0.9 (the ``mixed`` row).

Page cache: the files were just written and the data sets are small next to RAM, so both
sides read from the page cache (**warm cache**, both sides alike): this measures CPU
work and trioblock's per-block overhead, not the disk. An untimed loop pass warms the
cache before the first repetition. Dropping the cache needs root and is no guarantee on
a VM (the host caches too); ``--evict`` asks the kernel to forget each file's pages
with ``posix_fadvise(DONTNEED)`` before every timed run, best effort, for a rough
cold-ish reading.

Real clock and real threads only (never a MockClock: trioblock would run blocking work
inline on the Trio thread). ``--profile`` adds, untimed: cProfile of the Trio thread
during one scrub, cProfile of one loop pass, and the components of the scrub's work
(listing with ``iter_block_files``, ``verify_file_sync`` called directly) timed beside
the loop's own walk and verify.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import hashlib
import io
import json
import os
import pstats
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
import trio.testing
import zstandard

import trioblock

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import (
    HASH_LEN,
    KiB,
    MiB,
    Rate,
    Stopwatch,
    Timing,
    bench_root,
    environment,
    make_blocks,
    remove_dir,
    shares,
)

TARGET = 0.9
KINDS = ("text", "random")


@dataclass(frozen=True)
class DataSet:
    name: str
    #: (block size, blocks) - half of each count is text, half random
    parts: tuple[tuple[int, int], ...]
    target: float | None = None

    @property
    def n(self) -> int:
        return sum(count for _size, count in self.parts)

    @property
    def plaintext_bytes(self) -> int:
        return sum(size * count for size, count in self.parts)


@dataclass(frozen=True)
class Mode:
    repetitions: int
    datasets: tuple[DataSet, ...]


def _mode(reps: int, mixed: tuple[int, int, int], per_size: tuple[int, int, int]) -> Mode:
    sizes = (4 * KiB, 64 * KiB, MiB)
    return Mode(
        repetitions=reps,
        datasets=(
            DataSet("mixed", tuple(zip(sizes, mixed, strict=True)), TARGET),
            *(
                DataSet(f"{size // KiB} KiB" if size < MiB else "1 MiB", ((size, count),))
                for size, count in zip(sizes, per_size, strict=True)
            ),
        ),
    )


# The mixed set is 16:4:1 by count (4 KiB : 64 KiB : 1 MiB): by count 76 / 19 / 5 %,
# by bytes 5 / 19 / 76 %.
MODES = {
    "quick": _mode(3, (480, 120, 30), (800, 200, 24)),
    "default": _mode(5, (1600, 400, 100), (3000, 800, 96)),
}


# --------------------------------------------------------------------------------------
# Population (untimed)


def node_config(root: str) -> trioblock.Config:
    return trioblock.Config(
        node_id="bench",
        metadata_dir=Path(root, "meta"),
        data_dir=Path(root, "data"),
        data_fsync=False,
        disable_scrub=True,  # no automatic run; commands still work
        scrub_tranquility=0,
    )


def dataset_blocks(ds: DataSet, seed: int) -> list[bytes]:
    blocks: list[bytes] = []
    for size, count in ds.parts:
        for k, kind in enumerate(KINDS):
            part = count // 2 if k == 0 else count - count // 2
            blocks.extend(make_blocks(part, size, kind, seed=seed * 10 + k))
    return blocks


async def _populate(config: trioblock.Config, blocks: Sequence[bytes]) -> None:
    async with trioblock.open_block_manager(config) as bm:

        async def putter(share: list[tuple[int, bytes]]) -> None:
            for _i, data in share:
                await bm.put_block(data)

        async with trio.open_nursery() as nursery:
            for share in shares(blocks, 8):
                nursery.start_soon(putter, share)


def populate(root: str, blocks: Sequence[bytes]) -> trioblock.Config:
    config = node_config(root)
    trio.run(_populate, config, blocks)
    os.sync()
    return config


# --------------------------------------------------------------------------------------
# The two sides


def _require_real_clock() -> None:
    if isinstance(trio.lowlevel.current_clock(), trio.testing.MockClock):
        raise RuntimeError("benchmarks must run on the real clock")


async def _timed_scrub(
    config: trioblock.Config, n: int, profile: cProfile.Profile | None
) -> Timing:
    _require_real_clock()
    async with trioblock.open_block_manager(config) as bm:
        # Start-up work runs in the background (temp-file sweep, the stored-blocks
        # count): let it finish so that only the scrub is measured.
        while not bm.stored().exact:  # noqa: ASYNC110
            await trio.sleep(0.01)
        await bm.scrub(0)
        gc.collect()
        if profile is not None:
            profile.enable()
        with Stopwatch() as sw:
            await bm.scrub("start")
            await bm.wait_scrub_runs(1)
        if profile is not None:
            profile.disable()
        status = bm.scrub_status()
    if status.state != "finished" or status.blocks_checked != n or status.corruptions_found:
        raise AssertionError(f"scrub ended as {status}, expected {n} blocks and no corruption")
    return sw.timing


def data_dir(config: trioblock.Config) -> str:
    assert isinstance(config.data_dir, Path)  # node_config's single directory
    return str(config.data_dir)


def scrub_once(config: trioblock.Config, n: int, profile: cProfile.Profile | None = None) -> Timing:
    return trio.run(_timed_scrub, config, n, profile)


def plain_walk(root: str) -> list[tuple[str, bytes, bool]]:
    """(path, hash, compressed) of every block file under ``root``, in hash order."""
    out: list[tuple[str, bytes, bool]] = []
    for d1 in sorted((e for e in os.scandir(root) if len(e.name) == 2 and e.is_dir()), key=_name):
        for d2 in sorted(
            (e for e in os.scandir(d1.path) if len(e.name) == 2 and e.is_dir()), key=_name
        ):
            for f in sorted(os.scandir(d2.path), key=_name):
                name = f.name
                compressed = name.endswith(".zst")
                hex_hash = name[:-4] if compressed else name
                if len(hex_hash) != 2 * HASH_LEN:
                    continue  # temp or quarantined files
                out.append((f.path, bytes.fromhex(hex_hash), compressed))
    return out


def _name(entry: os.DirEntry[str]) -> str:
    return entry.name


def plain_verify(
    files: Sequence[tuple[str, bytes, bool]], dctx: zstandard.ZstdDecompressor
) -> tuple[int, int]:
    """(plaintext bytes, corrupt files) over ``files``."""
    blake2b = hashlib.blake2b
    total = bad = 0
    for path, h, compressed in files:
        with open(path, "rb") as f:
            payload = f.read()
        data = dctx.decompress(payload) if compressed else payload
        if blake2b(data).digest()[:HASH_LEN] != h:
            bad += 1
        total += len(data)
    return total, bad


def plain_scrub(root: str) -> tuple[int, int, int]:
    """Walk, read, decompress and hash every block file: (blocks, plaintext bytes, bad)."""
    dctx = zstandard.ZstdDecompressor()
    files = plain_walk(root)
    total, bad = plain_verify(files, dctx)
    return len(files), total, bad


def loop_once(config: trioblock.Config, n: int, nbytes: int) -> Timing:
    gc.collect()
    with Stopwatch() as sw:
        count, total, bad = plain_scrub(data_dir(config))
    if (count, total, bad) != (n, nbytes, 0):
        raise AssertionError(f"loop saw {count} blocks, {total} bytes, {bad} bad")
    return sw.timing


# --------------------------------------------------------------------------------------
# Cache handling


def evict(root: str) -> None:
    """Ask the kernel to drop the cached pages of every file under ``root`` (best effort)."""
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            try:
                fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            except OSError:
                continue
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


# --------------------------------------------------------------------------------------
# Profiling (untimed extras)


def _top(profile: cProfile.Profile, limit: int) -> str:
    buf = io.StringIO()
    stats = pstats.Stats(profile, stream=buf)
    stats.sort_stats("tottime").print_stats(limit)
    return buf.getvalue()


def _best(fn: Callable[[], Any], reps: int = 5) -> float:
    best = float("inf")
    for _ in range(reps):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


async def _components(config: trioblock.Config) -> dict[str, float]:
    from trioblock._storage.blockfiles import BlockStore, iter_block_files
    from trioblock._storage.threads import run_blocking

    root = Path(data_dir(config))
    async with trioblock.open_block_manager(config) as bm:
        while not bm.stored().exact:  # noqa: ASYNC110 (start-up work done first)
            await trio.sleep(0.01)
        store = BlockStore(
            bm.data_layout,
            compression=config.compression_level is not None,
            fsync=False,
            limiter=trio.CapacityLimiter(config.disk_threads),
            max_block_size=config.max_block_size,
        )
        locs = list(iter_block_files(root))
        files = plain_walk(str(root))
        dctx = zstandard.ZstdDecompressor()

        def verify_all() -> None:
            for loc in locs:
                if not store.verify_file_sync(loc):
                    raise AssertionError(f"{loc.path} failed")

        async def trip() -> None:
            for _ in range(len(locs)):
                await run_blocking(int, limiter=store.limiter)

        n = len(locs)
        out = {
            "walk_iter_block_files_us": _best(lambda: list(iter_block_files(root))) / n * 1e6,
            "walk_plain_us": _best(lambda: plain_walk(str(root))) / n * 1e6,
            "verify_file_sync_us": _best(verify_all) / n * 1e6,
            "verify_plain_us": _best(lambda: plain_verify(files, dctx)) / n * 1e6,
        }
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            await trip()
            best = min(best, time.perf_counter() - t0)
        out["empty_run_blocking_trip_us"] = best / n * 1e6
    return out


def profile_dataset(config: trioblock.Config, n: int, nbytes: int, limit: int) -> dict[str, Any]:
    scrub_prof = cProfile.Profile()
    scrub_once(config, n, scrub_prof)
    loop_prof = cProfile.Profile()
    loop_prof.enable()
    loop_once(config, n, nbytes)
    loop_prof.disable()
    components = trio.run(_components, config)
    return {
        "scrub_trio_thread": _top(scrub_prof, limit),
        "loop": _top(loop_prof, limit),
        "components_per_block": components,
    }


# --------------------------------------------------------------------------------------
# Driver


@dataclass
class Row:
    dataset: DataSet
    scrub: Rate
    loop: Rate
    file_bytes: int

    @property
    def ratio(self) -> float:
        return self.scrub.blocks_per_s / self.loop.blocks_per_s

    def as_dict(self) -> dict[str, Any]:
        def side(rate: Rate) -> dict[str, Any]:
            return {
                "seconds": rate.seconds,
                "cpu_seconds": rate.cpu_seconds,
                "best_seconds": rate.best,
                "blocks_per_s": rate.blocks_per_s,
                "plaintext_mib_per_s": self.dataset.plaintext_bytes / rate.best / MiB,
                "file_mib_per_s": self.file_bytes / rate.best / MiB,
                "cpu_us_per_block": rate.cpu_us_per_block,
            }

        return {
            "dataset": self.dataset.name,
            "parts": [{"size": s, "blocks": c} for s, c in self.dataset.parts],
            "blocks": self.dataset.n,
            "plaintext_bytes": self.dataset.plaintext_bytes,
            "file_bytes": self.file_bytes,
            "scrub": side(self.scrub),
            "loop": side(self.loop),
            "ratio": self.ratio,
            "target": self.dataset.target,
            "meets_target": (
                None if self.dataset.target is None else self.ratio >= self.dataset.target
            ),
        }


def _mib_s(ds: DataSet, rate: Rate) -> float:
    return ds.plaintext_bytes / rate.best / MiB


def _fmt(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:,.1f}"


def format_table(rows: Sequence[Row]) -> str:
    headers = [
        "set", "blocks", "MiB", "scrub blk/s", "scrub MiB/s", "loop blk/s", "loop MiB/s",
        "ratio", "target", "scrub cpu/blk", "loop cpu/blk",
    ]  # fmt: skip
    body = []
    for r in rows:
        ds = r.dataset
        target = ""
        if ds.target is not None:
            target = f">={ds.target:.2f} {'ok' if r.ratio >= ds.target else 'MISS'}"
        body.append(
            [
                ds.name,
                str(ds.n),
                f"{ds.plaintext_bytes / MiB:,.0f}",
                _fmt(r.scrub.blocks_per_s),
                _fmt(_mib_s(ds, r.scrub)),
                _fmt(r.loop.blocks_per_s),
                _fmt(_mib_s(ds, r.loop)),
                f"{r.ratio:.2f}",
                target,
                f"{r.scrub.cpu_us_per_block:,.0f} us",
                f"{r.loop.cpu_us_per_block:,.0f} us",
            ]
        )
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(headers)]
    left = {0, 8}

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i in left else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, body)])


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="CI-sized: < 30 s, 3 repetitions")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    p.add_argument("--dir", help="parent of the temp directory (default: /var/tmp or /tmp)")
    p.add_argument("--repetitions", type=int, help="override the mode's repetitions")
    p.add_argument("--sets", help="only these data sets, e.g. mixed,4k (default: all)")
    p.add_argument("--evict", action="store_true", help="posix_fadvise(DONTNEED) before runs")
    p.add_argument("--profile", action="store_true", help="cProfile + components (untimed)")
    p.add_argument("--profile-lines", type=int, default=25, help="functions per profile")
    p.add_argument("--keep", action="store_true", help="keep the temp directory")
    p.add_argument("--check", action="store_true", help="exit 1 when the target is missed")
    return p.parse_args(argv)


def _selected(mode: Mode, sets: str | None) -> list[DataSet]:
    if not sets:
        return list(mode.datasets)
    wanted = {s.strip().lower().replace(" ", "").removesuffix("ib") for s in sets.split(",")}
    out = [
        ds for ds in mode.datasets if ds.name.lower().replace(" ", "").removesuffix("ib") in wanted
    ]
    if not out:
        raise SystemExit(f"--sets {sets!r}: choose among mixed, 4k, 64k, 1m")
    return out


def _file_bytes(root: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _s, files in os.walk(root) for f in files)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    base = MODES["quick" if args.quick else "default"]
    reps = args.repetitions or base.repetitions
    datasets = _selected(base, args.sets)
    need = 2 * sum(ds.plaintext_bytes for ds in datasets)
    root = bench_root(args.dir, need_bytes=need)
    env = environment(root)
    env["loadavg_start"] = os.getloadavg()
    print(
        f"trioblock {trioblock.__version__}, Python {env['python']}, trio {env['trio']}, "
        f"zstandard {env['zstandard']}, {env['cpus']} CPUs, {env['filesystem']}, "
        f"load {env['loadavg_start'][0]:.2f}",
        file=sys.stderr,
    )
    print(
        f"data under {root}; {reps} repetition(s), best kept; "
        f"{'fadvise-evicted' if args.evict else 'warm'} page cache",
        file=sys.stderr,
    )
    started = time.perf_counter()
    rows: list[Row] = []
    profiles: dict[str, Any] = {}
    try:
        for index, ds in enumerate(datasets):
            t0 = time.perf_counter()
            blocks = dataset_blocks(ds, seed=index + 1)
            config = populate(os.path.join(root, f"set{index}"), blocks)
            del blocks
            where = data_dir(config)
            file_bytes = _file_bytes(where)
            loop_once(config, ds.n, ds.plaintext_bytes)  # untimed: warms the cache
            scrub = Rate(n=ds.n, size=ds.plaintext_bytes // ds.n)
            loop = Rate(n=ds.n, size=ds.plaintext_bytes // ds.n)
            for rep in range(reps):
                order = ("scrub", "loop") if rep % 2 == 0 else ("loop", "scrub")
                for side in order:
                    os.sync()
                    if args.evict:
                        evict(where)
                    if side == "scrub":
                        scrub.add(scrub_once(config, ds.n))
                    else:
                        loop.add(loop_once(config, ds.n, ds.plaintext_bytes))
            row = Row(ds, scrub, loop, file_bytes)
            rows.append(row)
            print(
                f"  {ds.name:7} n={ds.n:<5} scrub {scrub.blocks_per_s:8,.0f} blk/s  "
                f"loop {loop.blocks_per_s:8,.0f} blk/s  ratio {row.ratio:.2f}  "
                f"({time.perf_counter() - t0:.1f} s incl. populating)",
                file=sys.stderr,
            )
            if args.profile:
                profiles[ds.name] = profile_dataset(
                    config, ds.n, ds.plaintext_bytes, args.profile_lines
                )
    finally:
        if not args.keep:
            remove_dir(root)
    elapsed = time.perf_counter() - started
    env["loadavg_end"] = os.getloadavg()

    print()
    print(format_table(rows))
    print(
        f"\n{len(rows)} rows in {elapsed:.0f} s (load {env['loadavg_end'][0]:.2f}); "
        f"ratio = scrub blocks/s / loop blocks/s; best of {reps}; "
        f"{'fadvise-evicted' if args.evict else 'warm'} page cache; MiB = plaintext"
    )
    missed = [r for r in rows if r.dataset.target is not None and r.ratio < r.dataset.target]
    if any(r.dataset.target is not None for r in rows):
        print(f"target (>= {TARGET} on mixed): {'missed' if missed else 'met'}")
    if args.profile:
        for name, prof in profiles.items():
            comp = prof["components_per_block"]
            print(f"\n== {name}: components per block (best of 5, us) ==")
            for key, value in comp.items():
                print(f"  {key:30} {value:8.1f}")
            print(f"\n== {name}: cProfile of the Trio thread during one scrub ==")
            print(prof["scrub_trio_thread"])
            print(f"== {name}: cProfile of one loop pass ==")
            print(prof["loop"])
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "benchmark": "scrub",
                    "environment": env,
                    "mode": {
                        "repetitions": reps,
                        "cache": "evicted" if args.evict else "warm",
                        "elapsed_seconds": elapsed,
                    },
                    "results": [r.as_dict() for r in rows],
                    "profiles": profiles,
                },
                f,
                indent=2,
            )
        print(f"wrote {args.json}")
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
