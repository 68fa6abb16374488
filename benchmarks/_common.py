"""Shared helpers for trioblock's benchmarks (``benchmarks/*.py``).

Every benchmark compares trioblock with a *plain Python baseline doing the same work in
the same process, in the same run*, and reports the ratio trioblock / baseline. Absolute
numbers from shared CI machines are noise; ratios measured side by side are not (much).

What lives here:

- :func:`make_blocks`: reproducible unique blocks, compressible ("text") or not ("random");
- :class:`BaselineStore`: the baseline's put and get, written the way a careful Python
  programmer would without trioblock (hashlib + zstandard + os, in plain threads);
- :func:`run_in_threads`: split a list of items over N threads and time the whole;
- :class:`Result` and :func:`format_table`: one measured row and the printed table;
- :func:`bench_root` / :func:`fresh_dir`: temp directories on a disk with room;
- :func:`environment`: what to record next to the numbers.

Helpers are synchronous and import nothing from trioblock, so they can never measure
trioblock against itself.
"""

from __future__ import annotations

import concurrent.futures
import functools
import hashlib
import os
import platform
import random
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

import zstandard

T = TypeVar("T")
R = TypeVar("R")

KiB = 1024
MiB = 1024 * 1024
HASH_LEN = 32

# --------------------------------------------------------------------------------------
# Sizes


def parse_size(text: str) -> int:
    """``"4k"``, ``"64KiB"``, ``"1m"``, ``"4096"`` -> bytes (binary units)."""
    t = text.strip().lower().removesuffix("ib").removesuffix("b")
    mult = 1
    if t and t[-1] in "km":
        mult = KiB if t[-1] == "k" else MiB
        t = t[:-1]
    return int(float(t) * mult)


def size_label(size: int) -> str:
    if size >= MiB and size % MiB == 0:
        return f"{size // MiB} MiB"
    if size >= KiB and size % KiB == 0:
        return f"{size // KiB} KiB"
    return f"{size} B"


# --------------------------------------------------------------------------------------
# Data

_WORDS: list[str] | None = None


def _vocabulary(rng: random.Random) -> list[str]:
    global _WORDS
    if _WORDS is None:
        letters = "etaoinshrdlcumwfgypbvkjxqz"
        weights = [26 - i for i in range(26)]
        _WORDS = ["".join(rng.choices(letters, weights, k=rng.randint(2, 10))) for _ in range(4000)]
    return _WORDS


@functools.lru_cache(maxsize=4)
def _text_pool(size: int) -> bytes:
    """Pseudo-text (words, punctuation, numbers): zstd -1 compresses it ~2x (1.6x at 4 KiB).

    Built once per size (it takes a good half second) and shared by every data set;
    blocks differ by their tag and by where in the pool they start.
    """
    rng = random.Random(size)
    words = _vocabulary(rng)
    parts: list[str] = []
    total = 0
    while total < size:
        line = " ".join(rng.choices(words, k=rng.randint(4, 16)))
        line += f", {rng.randint(0, 99999)}.\n"
        parts.append(line)
        total += len(line)
    return "".join(parts).encode()[:size]


def make_blocks(n: int, size: int, kind: str, *, seed: int = 0) -> list[bytes]:
    """``n`` distinct blocks of ``size`` bytes; ``kind`` is ``"text"`` or ``"random"``.

    Every block starts with a unique 16-byte tag (seed, index), so no two blocks share a
    hash and content-addressed deduplication never kicks in.
    """
    if size < 16:
        raise ValueError("blocks of at least 16 bytes, please")
    body = size - 16
    rng = random.Random(seed * 1_000_003 + size)
    if kind == "random":
        return [
            seed.to_bytes(8, "big") + i.to_bytes(8, "big") + rng.randbytes(body) for i in range(n)
        ]
    if kind != "text":
        raise ValueError(f"unknown data kind {kind!r}")
    pool = _text_pool(max(4 * MiB, 2 * body))
    span = len(pool) - body
    blocks = []
    for i in range(n):
        start = rng.randrange(span + 1)
        blocks.append(seed.to_bytes(8, "big") + i.to_bytes(8, "big") + pool[start : start + body])
    return blocks


def compression_ratio(blocks: Sequence[bytes], level: int = 1) -> float:
    """Plaintext bytes / zstd bytes over (up to) the first 16 blocks."""
    cctx = zstandard.ZstdCompressor(level=level, write_checksum=True)
    sample = blocks[:16]
    return sum(map(len, sample)) / max(1, sum(len(cctx.compress(b)) for b in sample))


# --------------------------------------------------------------------------------------
# The baseline


class BaselineStore:
    """What trioblock's embedded put/get would be as straight-line Python.

    put: BLAKE2b-512 of the plaintext (first 32 bytes name the block); zstd (``level``,
    with content checksum and size) unless ``level`` is None; create ``aa/bb`` when
    missing (fsyncing the parent of a directory it creates, when ``fsync``); write to
    ``<final>.tmp<8 hex>`` opened O_EXCL; fsync it (when ``fsync``); rename onto the
    final name; fsync the directory (when ``fsync``).

    get: read the file, decompress, hash the plaintext, compare with the name.

    Each thread keeps its own zstd compressor/decompressor (they are not thread-safe,
    and re-creating one per block is avoidable work). Directories known to exist are
    remembered in a set, so the steady state costs no ``stat``.
    """

    def __init__(self, root: str, *, fsync: bool, level: int | None = 1) -> None:
        self.root = root
        self.fsync = fsync
        self.level = level
        self.suffix = ".zst" if level is not None else ""
        self._known_dirs: set[str] = set()
        self._local = threading.local()
        os.makedirs(root, exist_ok=True)

    def _cctx(self) -> zstandard.ZstdCompressor:
        cctx = getattr(self._local, "cctx", None)
        if cctx is None:
            assert self.level is not None
            cctx = zstandard.ZstdCompressor(
                level=self.level, write_checksum=True, write_content_size=True
            )
            self._local.cctx = cctx
        return cctx

    def _dctx(self) -> zstandard.ZstdDecompressor:
        dctx = getattr(self._local, "dctx", None)
        if dctx is None:
            dctx = zstandard.ZstdDecompressor()
            self._local.dctx = dctx
        return dctx

    def _fsync_dir(self, path: str) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _subdir(self, h: bytes) -> str:
        level1 = os.path.join(self.root, f"{h[0]:02x}")
        level2 = os.path.join(level1, f"{h[1]:02x}")
        if level2 in self._known_dirs:
            return level2
        for d in (level1, level2):
            if d in self._known_dirs:
                continue
            try:
                os.mkdir(d)
            except FileExistsError:
                pass
            else:
                if self.fsync:
                    self._fsync_dir(os.path.dirname(d))
            self._known_dirs.add(d)
        return level2

    def path(self, h: bytes) -> str:
        return os.path.join(self.root, f"{h[0]:02x}", f"{h[1]:02x}", h.hex() + self.suffix)

    def put(self, data: bytes) -> bytes:
        h = hashlib.blake2b(data).digest()[:HASH_LEN]
        payload = self._cctx().compress(data) if self.level is not None else data
        subdir = self._subdir(h)
        final = os.path.join(subdir, h.hex() + self.suffix)
        tmp = f"{final}.tmp{os.urandom(4).hex()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view) :]
            if self.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, final)
        if self.fsync:
            self._fsync_dir(subdir)
        return h

    def get(self, h: bytes) -> bytes:
        with open(self.path(h), "rb") as f:
            payload = f.read()
        data = self._dctx().decompress(payload) if self.level is not None else payload
        if hashlib.blake2b(data).digest()[:HASH_LEN] != h:
            raise ValueError(f"block {h.hex()} is corrupt")
        return data


# --------------------------------------------------------------------------------------
# Timing and running work in threads


@dataclass(frozen=True)
class Timing:
    """Wall-clock seconds and process CPU seconds (all threads) of one phase.

    CPU time is the steadier number on a shared machine: other tenants stretch wall time
    but not (much) the CPU a phase consumes. It is what profiling suggestions are about.
    """

    wall: float
    cpu: float


class Stopwatch:
    """``with Stopwatch() as sw: ...`` then ``sw.timing``."""

    timing: Timing

    def __enter__(self) -> Stopwatch:
        self._wall = time.perf_counter()
        self._cpu = time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.timing = Timing(time.perf_counter() - self._wall, time.process_time() - self._cpu)


def shares(items: Sequence[T], n: int) -> list[list[tuple[int, T]]]:
    """Split ``items`` round-robin into ``n`` lists of (index, item)."""
    out: list[list[tuple[int, T]]] = [[] for _ in range(n)]
    for i, item in enumerate(items):
        out[i % n].append((i, item))
    return [s for s in out if s]


def run_in_threads(
    fn: Callable[[T], R], items: Sequence[T], concurrency: int
) -> tuple[Timing, list[R]]:
    """Apply ``fn`` to every item with ``concurrency`` threads; (timing, results).

    Each thread loops over its own round-robin share (as ``concurrency`` Trio tasks each
    doing their share would), so there is no per-item executor overhead.
    """
    results: list[Any] = [None] * len(items)

    def worker(share: list[tuple[int, T]]) -> None:
        for i, item in share:
            results[i] = fn(item)

    parts = shares(items, concurrency)
    with concurrent.futures.ThreadPoolExecutor(max_workers=concurrency) as pool:
        # Start the threads before the clock does.
        list(pool.map(lambda _: None, range(concurrency)))
        with Stopwatch() as sw:
            futures = [pool.submit(worker, part) for part in parts]
            for fut in futures:
                fut.result()
    return sw.timing, results


# --------------------------------------------------------------------------------------
# Directories


def bench_root(requested: str | None, *, need_bytes: int = 0) -> str:
    """A fresh directory for this run: under ``requested`` or the roomiest temp dir."""
    if requested is not None:
        os.makedirs(requested, exist_ok=True)
        parent = requested
    else:
        candidates = [d for d in ("/var/tmp", tempfile.gettempdir()) if os.path.isdir(d)]
        parent = max(candidates, key=lambda d: shutil.disk_usage(d).free)
    free = shutil.disk_usage(parent).free
    if need_bytes and free < 2 * need_bytes:
        raise SystemExit(f"{parent}: only {free >> 20} MiB free, need ~{2 * need_bytes >> 20} MiB")
    return tempfile.mkdtemp(prefix="trioblock-bench-", dir=parent)


_counter = 0


def fresh_dir(root: str, label: str) -> str:
    global _counter
    _counter += 1
    path = os.path.join(root, f"{_counter:04d}-{label}")
    os.makedirs(path)
    return path


def remove_dir(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


def filesystem_of(path: str) -> str:
    """Mount point and type of the filesystem holding ``path`` (Linux; "?" elsewhere)."""
    best = ("", "?")
    try:
        real = os.path.realpath(path)
        with open("/proc/mounts") as f:
            for line in f:
                _dev, mnt, fstype, *_ = line.split()
                inside = real == mnt or real.startswith(mnt.rstrip("/") + "/")
                if inside and len(mnt) >= len(best[0]):
                    best = (mnt, fstype)
    except OSError:
        pass
    return f"{best[1]} on {best[0]}"


def environment(data_root: str) -> dict[str, Any]:
    import trio

    return {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "trio": trio.__version__,
        "zstandard": zstandard.__version__,
        "dir": data_root,
        "filesystem": filesystem_of(data_root),
        "switch_interval": sys.getswitchinterval(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


# --------------------------------------------------------------------------------------
# Results


@dataclass
class Rate:
    """Best-of-N timing of one phase over ``n`` blocks of ``size`` plaintext bytes."""

    n: int
    size: int
    seconds: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)

    def add(self, timing: Timing) -> None:
        self.seconds.append(timing.wall)
        self.cpu_seconds.append(timing.cpu)

    @property
    def best(self) -> float:
        return min(self.seconds)

    @property
    def cpu_us_per_block(self) -> float:
        """Least process CPU time (all threads) per block over the repetitions."""
        return min(self.cpu_seconds) / self.n * 1e6

    @property
    def blocks_per_s(self) -> float:
        return self.n / self.best

    def summary(self) -> dict[str, float]:
        """The derived figures, for JSON output beside the raw timings."""
        return {
            "best_seconds": self.best,
            "blocks_per_s": self.blocks_per_s,
            "mib_per_s": self.mib_per_s,
            "cpu_us_per_block": self.cpu_us_per_block,
        }

    @property
    def mib_per_s(self) -> float:
        return self.n * self.size / self.best / MiB


@dataclass
class Result:
    """One row: an operation under one configuration, trioblock beside the baseline."""

    op: str
    size: int
    data: str
    fsync: bool
    concurrency: int
    trioblock: Rate
    baseline: Rate
    target: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.trioblock.blocks_per_s / self.baseline.blocks_per_s

    @property
    def meets_target(self) -> bool | None:
        return None if self.target is None else self.ratio >= self.target

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for side in ("trioblock", "baseline"):
            d[side].update(getattr(self, side).summary())
        d["ratio"] = self.ratio
        d["meets_target"] = self.meets_target
        return d


def _fmt_rate(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:,.1f}"


def format_table(results: Iterable[Result]) -> str:
    headers = [
        "op", "size", "data", "fsync", "conc", "n",
        "tb blk/s", "tb MiB/s", "base blk/s", "base MiB/s", "ratio", "target",
        "tb cpu/blk", "base cpu/blk",
    ]  # fmt: skip
    rows = []
    for r in results:
        target = ""
        if r.target is not None:
            target = f">={r.target:.2f} {'ok' if r.meets_target else 'MISS'}"
        rows.append(
            [
                r.op,
                size_label(r.size),
                r.data,
                "on" if r.fsync else "off",
                str(r.concurrency),
                str(r.trioblock.n),
                _fmt_rate(r.trioblock.blocks_per_s),
                _fmt_rate(r.trioblock.mib_per_s),
                _fmt_rate(r.baseline.blocks_per_s),
                _fmt_rate(r.baseline.mib_per_s),
                f"{r.ratio:.2f}",
                target,
                f"{r.trioblock.cpu_us_per_block:,.0f} us",
                f"{r.baseline.cpu_us_per_block:,.0f} us",
            ]
        )
    widths = [
        max(len(h), *(len(row[i]) for row in rows)) if rows else len(h)
        for i, h in enumerate(headers)
    ]
    left = {0, 1, 2, 3, 11}

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i in left else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    out = [line(headers), line(["-" * w for w in widths])]
    out.extend(line(row) for row in rows)
    return "\n".join(out)


def render_table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], left: Iterable[int] = ()
) -> str:
    """A plain-text table: ``left`` holds the indices of left-aligned columns.

    For benchmarks whose rows do not fit :class:`Result` (``benchmarks/cluster.py``).
    """
    left_set = set(left)
    widths = [
        max(len(h), *(len(row[i]) for row in rows)) if rows else len(h)
        for i, h in enumerate(headers)
    ]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i in left_set else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    out = [line(headers), line(["-" * w for w in widths])]
    out.extend(line(row) for row in rows)
    return "\n".join(out)


class ThreadStopwatch(Stopwatch):
    """A :class:`Stopwatch` that also records the CPU time of the calling thread.

    In a Trio program the calling thread is the Trio thread: its CPU time per operation
    is the part of the work that cannot spread over cores (``thread_cpu``, seconds).
    """

    thread_cpu: float

    def __enter__(self) -> ThreadStopwatch:
        self._thread = time.thread_time()
        super().__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        self.thread_cpu = time.thread_time() - self._thread


def config_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``--config FIELD=VALUE`` options as ``trioblock.Config`` keyword arguments."""
    import ast

    import trioblock

    out: dict[str, Any] = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or name not in trioblock.Config.field_names():
            raise SystemExit(f"--config {item!r}: expected FIELD=VALUE with a Config field")
        try:
            out[name] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            out[name] = text
    return out
