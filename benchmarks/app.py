#!/usr/bin/env python
"""An application's path: a deduplicating backup through a gateway into 3 ``serve`` nodes.

    python benchmarks/app.py              # ~4,000 files, ~110 MB; one run
    python benchmarks/app.py --quick      # ~600 files, ~16 MB: a fast check
    python benchmarks/app.py --runs 3 --json out.json
    python benchmarks/app.py --both --runs 3   # the application's first shape too, alternating
    python benchmarks/app.py --naive          # only the first shape
    python benchmarks/app.py --no-fsync       # nodes without fsync (not durable: its cost)

What it does, in one process tree:

1. generates a tree like ``/usr/share/doc`` (reproducible, seeded): mostly small text
   files (log-normal sizes, median a few KiB, a few of several MiB), about one in six
   already compressed (``.gz``-like: incompressible), and about one in twelve a copy of
   another file;
2. starts three ``trioblock serve`` processes on 127.0.0.1 (replication 3, write quorum 2,
   ``data_fsync`` and ``metadata_fsync`` on, data in a temp dir), each from its own TOML file;
3. in this process, opens a gateway from one of those files
   (``trioblock.open_gateway_from_config``) and runs the backup an application writes
   from docs/applications.md: files read, cut into 256 KiB chunks and hashed in groups
   of a few MiB per worker-thread trip, asked about with ``missing_blocks`` per batch of
   64 chunks (two batches under way), each batch's missing ones put in one
   ``put_blocks`` call, the manifest put, then one ``add_references`` call for every
   (chunk, snapshot) pair (``--naive``: one trip per file, one batch at a time, its
   missing chunks put 16 at a time with ``put_block``, as the guide first showed it);
4. backs the same, unchanged tree up a second time (everything deduplicated), then
   restores the first snapshot and checks it: files in groups of at most 64 chunks and
   4 MiB, each group's chunks fetched with one ``get_blocks`` call and its files written
   (each to a temp file renamed into place) in one worker-thread trip, two groups under
   way; a larger file alone, 16 chunks at a time (``--naive``: one file at a time, its
   chunks with ``get_block``);
5. runs the baselines on the same tree, in the same run: ``tar -cf - | zstd -1 -T1`` into
   a file, ``cp -r`` followed by ``sync``, a plain ``cat`` of every file, and ``write``:
   a Python loop writing every file from memory as the restore does (temp file, mode,
   rename; nothing fetched or verified), the floor of any restore that creates files.

It reports MB/s (10^6 bytes of the tree per second) of each phase, the ratios the issue
sets targets for, the gateway's connections opened, and CPU: this process's (the
application and its gateway, from ``resource.getrusage``) and each node's (from
``/proc/PID/stat``), user and system, per block put (and referenced) in the first
backup. Targets: first backup >= 0.2 x tar|zstd; second backup >= 10 x faster than the
first; restore >= 0.5 x cat; gateway and node CPU per block <= 0.4 ms. ``--check``
exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import trio

import trioblock
from trioblock import Hash, ReferenceBatchError, blake2sum

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import _text_pool, bench_root, environment

CHUNK_SIZE = 256 * 1024
PARALLEL = 16
BATCH = 64
#: A restore group: files of at most this many chunks and bytes in all, fetched with one
#: ``get_blocks`` call and written in one worker-thread trip; a larger file is restored
#: alone, ``SLICE_CHUNKS`` chunks at a time.
GROUP_CHUNKS = 64
GROUP_BYTES = 4 * 1024 * 1024
SLICE_CHUNKS = 16
#: Restore groups under way at once (memory: about this many times GROUP_BYTES).
GROUPS_IN_FLIGHT = 2
MB = 1_000_000
CLK_TCK = os.sysconf("SC_CLK_TCK")

TARGETS = {
    "backup / tar|zstd": 0.2,
    "second backup speed-up": 10.0,
    "restore / cat": 0.5,
    "gateway ms/block": 0.4,
    "node ms/block": 0.4,
}

# --------------------------------------------------------------------------------------
# The tree


def make_tree(root: Path, files: int, total: int, seed: int = 1) -> tuple[int, int]:
    """About ``files`` files of about ``total`` bytes under ``root``; (files, bytes)."""
    rng = random.Random(seed)
    pool = _text_pool(8 * 1024 * 1024)
    # Log-normal sizes (median ~6 KiB), scaled so the tree holds about ``total`` bytes.
    raw = [min(rng.lognormvariate(math.log(6000), 1.6), 40e6) for _ in range(files)]
    scale = total / sum(raw)
    sizes = [max(0, int(s * scale)) for s in raw]
    written: list[Path] = []
    count = size = 0
    for i, n in enumerate(sizes):
        d = root / f"pkg{i // 12:04d}"
        d.mkdir(parents=True, exist_ok=True)
        if written and rng.random() < 1 / 12:  # a duplicate of an earlier file
            src = rng.choice(written)
            data = src.read_bytes()
            path = d / f"copy-{i}-{src.name}"
        elif rng.random() < 1 / 6:  # already compressed
            data = rng.randbytes(n)
            path = d / f"changelog-{i}.gz"
        else:
            start = rng.randrange(max(1, len(pool) - n))
            data = f"file {i}\n".encode() + pool[start : start + n]
            path = d / f"README-{i}.txt"
        path.write_bytes(data)
        written.append(path)
        count += 1
        size += len(data)
    return count, size


def list_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def tree_digest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in list_files(root)
    }


# --------------------------------------------------------------------------------------
# The application (as docs/applications.md and examples/dedup_backup.py write it)


async def _parallel(items: Sequence[Any], fn: Any, limit: int = PARALLEL) -> list[Any]:
    results: list[Any] = [None] * len(items)
    limiter = trio.CapacityLimiter(limit)

    async def one(i: int, item: Any) -> None:
        async with limiter:
            results[i] = await fn(item)

    async with trio.open_nursery() as nursery:
        for i, item in enumerate(items):
            nursery.start_soon(one, i, item)
    return results


def _read_chunks(path: Path) -> tuple[int, list[bytes], list[Hash]]:
    data = path.read_bytes()
    pieces = [data[i : i + CHUNK_SIZE] for i in range(0, len(data), CHUNK_SIZE)]
    return path.stat().st_mode & 0o7777, pieces, [blake2sum(p) for p in pieces]


def _read_many(paths: list[Path]) -> list[tuple[Path, int, list[bytes], list[Hash]]]:
    """Several files read, cut and hashed in one worker-thread trip."""
    return [(path, *_read_chunks(path)) for path in paths]


def _batches(paths: list[Path], limit: int) -> list[list[Path]]:
    """Consecutive groups of files of about ``limit`` bytes (a large file alone)."""
    out: list[list[Path]] = []
    group: list[Path] = []
    size = 0
    for path in paths:
        n = path.stat().st_size
        if group and size + n > limit:
            out.append(group)
            group, size = [], 0
        group.append(path)
        size += n
    if group:
        out.append(group)
    return out


def _write_file(target: Path, data: bytes, mode: int) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(target.name + ".partial")
    temp.write_bytes(data)
    temp.chmod(mode)
    temp.rename(target)


def _write_files(files: list[tuple[str, bytes, int]]) -> None:
    """Several files written in one worker-thread trip, each whole or not at all (a
    temp file renamed into place), with few system calls: each directory made once,
    the mode set on the open file."""
    made: set[str] = set()
    for target, data, mode in files:
        parent = os.path.dirname(target)
        if parent not in made:
            os.makedirs(parent, exist_ok=True)
            made.add(parent)
        temp = target + ".partial"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fchmod(fd, mode)
        finally:
            os.close(fd)
        os.rename(temp, target)


def _is_large(entry: dict[str, Any]) -> bool:
    return len(entry["chunks"]) > GROUP_CHUNKS or entry["size"] > GROUP_BYTES


def _restore_groups(files: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Consecutive files of at most ``GROUP_CHUNKS`` chunks and ``GROUP_BYTES`` bytes
    in all (a larger file alone)."""
    groups: list[list[dict[str, Any]]] = []
    group: list[dict[str, Any]] = []
    chunks = size = 0
    for entry in files:
        n = len(entry["chunks"])
        if group and (chunks + n > GROUP_CHUNKS or size + entry["size"] > GROUP_BYTES):
            groups.append(group)
            group, chunks, size = [], 0, 0
        group.append(entry)
        chunks += n
        size += entry["size"]
    if group:
        groups.append(group)
    return groups


def _open_partial(target: Path) -> Any:
    target.parent.mkdir(parents=True, exist_ok=True)
    return open(target.with_name(target.name + ".partial"), "wb")


def _finish_file(f: Any, target: Path, mode: int, last: bytes) -> None:
    with f:
        f.write(last)
    temp = target.with_name(target.name + ".partial")
    temp.chmod(mode)
    temp.rename(target)


@dataclass
class Snapshot:
    manifest: Hash
    chunks: int
    distinct: int
    new: int


class Backup:
    """The backup of docs/applications.md.

    ``naive``: the shape the guide first showed (one thread trip per file read, one
    batch asked about and put at a time, one file restored at a time); otherwise files
    are read in groups of a few MiB per thread trip while the previous group is sent,
    two batches are under way at once (the next one asked about while the previous
    one's ``put_blocks`` finishes), and files are restored in groups (``GROUP_CHUNKS``
    chunks, ``GROUP_BYTES`` bytes): one ``get_blocks`` call and one thread trip per
    group, ``GROUPS_IN_FLIGHT`` groups at once.
    """

    def __init__(self, client: trioblock.BlockManager, *, naive: bool = False) -> None:
        self.client = client
        self.naive = naive

    async def _send_new(self, pending: dict[Hash, bytes]) -> int:
        new = sorted(await self.client.missing_blocks(pending))
        await _parallel(new, lambda h: self.client.put_block(pending[h]))
        pending.clear()
        return len(new)

    async def _read(
        self,
        root: Path,
        send: trio.MemorySendChannel[list[tuple[Path, int, list[bytes], list[Hash]]]],
    ) -> None:
        async with send:
            paths = await trio.to_thread.run_sync(list_files, root)
            if self.naive:
                for path in paths:
                    await send.send(await trio.to_thread.run_sync(_read_many, [path]))
                return
            for group in await trio.to_thread.run_sync(_batches, paths, BATCH * CHUNK_SIZE // 4):
                await send.send(await trio.to_thread.run_sync(_read_many, group))

    async def _send_batch(
        self, batch: dict[Hash, bytes], in_flight: trio.Semaphore, counts: list[int]
    ) -> None:
        """Ask about one batch and put what is missing in one ``put_blocks`` call."""
        try:
            new = sorted(await self.client.missing_blocks(batch))
            if new:
                await self.client.put_blocks([batch[h] for h in new])
            counts.append(len(new))
        finally:
            in_flight.release()

    async def backup(self, root: Path) -> Snapshot:
        owner = f"snapshot/{uuid.uuid4().hex}"
        files: list[dict[str, Any]] = []
        chunks: list[Hash] = []
        pending: dict[Hash, bytes] = {}
        new = 0
        # Two batches at once: the next one is asked about while the previous one's
        # put_blocks finishes (bounded memory: two batches of chunks).
        in_flight = trio.Semaphore(2)
        counts: list[int] = []
        async with trio.open_nursery() as nursery:
            # One group read ahead while the current one is sent (bounded memory).
            send, receive = trio.open_memory_channel[
                list[tuple[Path, int, list[bytes], list[Hash]]]
            ](0 if self.naive else 1)
            nursery.start_soon(self._read, root, send)
            async with receive:
                async for group in receive:
                    for path, mode, pieces, hashes in group:
                        for h, piece in zip(hashes, pieces, strict=True):
                            pending.setdefault(h, piece)
                            if len(pending) >= BATCH:
                                if self.naive:
                                    new += await self._send_new(pending)
                                else:
                                    await in_flight.acquire()
                                    nursery.start_soon(self._send_batch, pending, in_flight, counts)
                                    pending = {}
                        chunks.extend(hashes)
                        files.append(
                            {
                                "path": path.relative_to(root).as_posix(),
                                "mode": mode,
                                "size": sum(map(len, pieces)),
                                "chunks": [h.hex() for h in hashes],
                            }
                        )
            if pending and not self.naive:
                await in_flight.acquire()
                nursery.start_soon(self._send_batch, pending, in_flight, counts)
                pending = {}
        if pending:
            new += await self._send_new(pending)
        new += sum(counts)
        manifest = json.dumps({"version": 1, "owner": owner, "files": files}).encode()
        manifest_hash = await self.client.put_block(manifest)
        distinct = sorted(set(chunks))
        pairs = [(h, owner) for h in distinct] + [(manifest_hash, owner)]
        try:
            await self.client.add_references(pairs)
        except ReferenceBatchError as exc:  # nothing collects in this benchmark
            raise SystemExit(f"add_references failed: {exc}") from exc
        return Snapshot(manifest_hash, len(chunks), len(distinct), new)

    async def _restore_large(self, dest: Path, entry: dict[str, Any]) -> int:
        """A file over a group's size, a slice of chunks at a time into a temp file
        renamed into place (memory: one slice)."""
        target = dest / entry["path"]
        hashes = [Hash.from_hex(h) for h in entry["chunks"]]
        f = await trio.to_thread.run_sync(_open_partial, target)
        size = 0
        last = b""
        try:
            for i in range(0, len(hashes), SLICE_CHUNKS):
                if last:
                    await trio.to_thread.run_sync(f.write, last)
                last = b"".join(await self.client.get_blocks(hashes[i : i + SLICE_CHUNKS]))
                size += len(last)
            if size != entry["size"]:
                raise SystemExit(f"{entry['path']}: restored {size} of {entry['size']}")
            # The last slice is written with the close, chmod and rename: one trip.
            await trio.to_thread.run_sync(_finish_file, f, target, entry["mode"], last)
        except BaseException:
            f.close()
            raise
        return size

    async def _restore_group(self, dest: Path, group: list[dict[str, Any]]) -> int:
        """The files of one group: their chunks in one ``get_blocks`` call, the files
        written in one worker-thread trip."""
        if len(group) == 1 and _is_large(group[0]):
            return await self._restore_large(dest, group[0])
        hashes = [Hash.from_hex(h) for entry in group for h in entry["chunks"]]
        blocks = iter(await self.client.get_blocks(hashes))
        files: list[tuple[str, bytes, int]] = []
        for entry in group:
            data = b"".join([next(blocks) for _ in entry["chunks"]])
            if len(data) != entry["size"]:
                raise SystemExit(f"{entry['path']}: restored {len(data)} of {entry['size']}")
            files.append((os.path.join(dest, entry["path"]), data, entry["mode"]))
        await trio.to_thread.run_sync(_write_files, files)
        return sum(len(data) for _, data, _ in files)

    async def restore(self, manifest: Hash, dest: Path) -> int:
        parsed = json.loads(await self.client.get_block(manifest))
        if not self.naive:
            groups = _restore_groups(parsed["files"])
            sizes = await _parallel(
                groups, lambda g: self._restore_group(dest, g), limit=GROUPS_IN_FLIGHT
            )
            return sum(sizes)
        written = 0
        for entry in parsed["files"]:
            hashes = [Hash.from_hex(h) for h in entry["chunks"]]
            pieces = await _parallel(hashes, self.client.get_block)
            data = b"".join(pieces)
            if len(data) != entry["size"]:
                raise SystemExit(f"{entry['path']}: restored {len(data)} of {entry['size']}")
            await trio.to_thread.run_sync(_write_file, dest / entry["path"], data, entry["mode"])
            written += len(data)
        return written


# --------------------------------------------------------------------------------------
# The nodes


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class Nodes:
    """Three ``trioblock serve`` processes and their TOML files."""

    def __init__(self, root: Path, *, fsync: bool = True) -> None:
        self.root = root
        self.fsync = fsync
        self.procs: list[subprocess.Popen[bytes]] = []
        self.configs: list[Path] = []

    def start(self) -> None:
        (self.root / "secret").write_text(os.urandom(32).hex() + "\n")
        os.chmod(self.root / "secret", 0o600)
        ports = _free_ports(3)
        peers = "\n".join(f'n{i} = "127.0.0.1:{p}"' for i, p in enumerate(ports))
        for i, port in enumerate(ports):
            path = self.root / f"n{i}.toml"
            path.write_text(
                f'node_id = "n{i}"\n'
                f'metadata_dir = "n{i}/meta"\n'
                f'data_dir = "n{i}/data"\n'
                f'rpc_bind_addr = "127.0.0.1:{port}"\n'
                'rpc_secret_file = "secret"\n'
                "replication_factor = 3\nwrite_quorum = 2\n"
                f"data_fsync = {str(self.fsync).lower()}\n"
                f"metadata_fsync = {str(self.fsync).lower()}\n\n"
                f"[peers]\n{peers}\n"
            )
            self.configs.append(path)
        for path in self.configs:
            proc = subprocess.Popen(
                [sys.executable, "-m", "trioblock", "serve", "--config", str(path)],
                stdout=subprocess.PIPE,
                stderr=open(path.with_suffix(".log"), "wb"),  # noqa: SIM115
            )
            self.procs.append(proc)
        for proc, path in zip(self.procs, self.configs, strict=True):
            assert proc.stdout is not None
            line = proc.stdout.readline().decode()
            if "ready" not in line:
                raise SystemExit(f"{path}: serve did not start: {line!r}")

    def cpu(self) -> list[float]:
        """CPU seconds (user + system) of each node so far."""
        return [user + system for user, system in self.cpu_split()]

    def cpu_split(self) -> list[tuple[float, float]]:
        """(user, system) CPU seconds of each node so far."""
        out = []
        for proc in self.procs:
            with open(f"/proc/{proc.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            out.append((int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK))
        return out

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# --------------------------------------------------------------------------------------
# Measuring


def self_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


@dataclass
class Phase:
    seconds: float
    app_cpu: float
    node_cpu: list[float]
    #: system CPU seconds: this process's, then the nodes' added up
    app_sys: float = 0.0
    nodes_sys: float = 0.0


@dataclass
class Run:
    tree_bytes: int
    files: int
    phases: dict[str, Phase] = field(default_factory=dict)
    baselines: dict[str, float] = field(default_factory=dict)
    blocks_put: int = 0
    chunks: int = 0
    #: the gateway's connections opened, and its requests, over the three phases
    connections: tuple[int, int] = (0, 0)

    def mb_s(self, name: str) -> float:
        seconds = self.phases[name].seconds if name in self.phases else self.baselines[name]
        return self.tree_bytes / seconds / MB

    def ratios(self) -> dict[str, float]:
        first = self.phases["backup"]
        return {
            "backup / tar|zstd": self.mb_s("backup") / self.mb_s("tar|zstd"),
            "backup / cp+sync": self.mb_s("backup") / self.mb_s("cp+sync"),
            "second backup speed-up": first.seconds / self.phases["backup again"].seconds,
            "restore / cat": self.mb_s("restore") / self.mb_s("cat"),
            "restore / cp+sync": self.mb_s("restore") / self.mb_s("cp+sync"),
            "restore / write": self.mb_s("restore") / self.mb_s("write"),
            "write / cat": self.mb_s("write") / self.mb_s("cat"),
            "gateway ms/block": first.app_cpu / self.blocks_put * 1e3,
            "node ms/block": max(first.node_cpu) / self.blocks_put * 1e3,
        }


def self_sys() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_stime


async def _timed(nodes: Nodes, fn: Any, *args: Any) -> tuple[Phase, Any]:
    cpu0, sys0, nodes0, t0 = self_cpu(), self_sys(), nodes.cpu_split(), time.perf_counter()
    result = await fn(*args)
    t1, cpu1, sys1, nodes1 = time.perf_counter(), self_cpu(), self_sys(), nodes.cpu_split()
    pairs = list(zip(nodes0, nodes1, strict=True))
    phase = Phase(
        t1 - t0,
        cpu1 - cpu0,
        [sum(b) - sum(a) for a, b in pairs],
        sys1 - sys0,
        sum(b[1] - a[1] for a, b in pairs),
    )
    return phase, result


async def _app_phases(nodes: Nodes, tree: Path, dest: Path, run: Run, naive: bool) -> None:
    async with trioblock.open_gateway_from_config(nodes.configs[0], "bench-app") as gw:
        app = Backup(gw, naive=naive)
        await gw.missing_blocks([blake2sum(b"warm-up")])  # connections up before the clock
        run.phases["backup"], snap = await _timed(nodes, app.backup, tree)
        run.blocks_put, run.chunks = snap.new, snap.chunks
        run.phases["backup again"], again = await _timed(nodes, app.backup, tree)
        if again.new != 0:
            raise SystemExit(f"the second backup put {again.new} blocks, expected none")
        run.phases["restore"], _ = await _timed(nodes, app.restore, snap.manifest, dest)
        stats = gw.rpc_stats()
        if stats is not None:
            run.connections = (stats.connections_opened, stats.requests)


def _sh(cmd: str) -> float:
    t0 = time.perf_counter()
    subprocess.run(["sh", "-c", cmd], check=True)
    return time.perf_counter() - t0


def baselines(tree: Path, work: Path) -> dict[str, float]:
    q = lambda p: "'" + str(p) + "'"  # noqa: E731
    out = {}
    subprocess.run(["sync"], check=True)
    out["cat"] = _sh(f"cd {q(tree)} && find . -type f -exec cat {{}} + > /dev/null")
    out["tar|zstd"] = _sh(
        f"tar -cf - -C {q(tree.parent)} {q(tree.name)} | zstd -1 -T1 -q -o {q(work / 't.zst')}"
    )
    out["cp+sync"] = _sh(f"cp -r {q(tree)} {q(work / 'copy')} && sync")
    out["write"] = _write_from_memory(tree, work / "written")
    return out


def _write_from_memory(tree: Path, dest: Path) -> float:
    """Seconds a plain loop takes to write every file of ``tree`` from memory into
    ``dest`` the way the restore does (temp file, mode, rename; no fsync): the floor
    of any restore that creates the files, with nothing fetched or verified."""
    files = [
        (p.relative_to(tree), p.read_bytes(), p.stat().st_mode & 0o7777) for p in list_files(tree)
    ]
    t0 = time.perf_counter()
    for rel, data, mode in files:
        _write_file(dest / rel, data, mode)
    return time.perf_counter() - t0


def one_run(root: Path, tree: Path, files: int, size: int, naive: bool, fsync: bool) -> Run:
    run = Run(size, files)
    work = root / f"run-{uuid.uuid4().hex[:8]}"
    work.mkdir()
    nodes = Nodes(work, fsync=fsync)
    nodes.start()
    try:
        trio.run(_app_phases, nodes, tree, work / "restored", run, naive)
    finally:
        nodes.stop()
    if tree_digest(work / "restored") != tree_digest(tree):
        raise SystemExit("the restored tree differs from the original")
    run.baselines = baselines(tree, work)
    # Nothing is deleted before the end: on ext4 a large delete slows the file
    # creations that follow (the next run's nodes and restore would pay for it).
    return run


def _fmt(x: float) -> str:
    return f"{x:,.1f}" if x >= 10 else f"{x:,.2f}"


def report(runs: Sequence[Run]) -> str:
    lines = []
    r0 = runs[0]
    lines.append(
        f"tree: {r0.files} files, {r0.tree_bytes / MB:.1f} MB, {r0.chunks} chunks, "
        f"{r0.blocks_put} distinct blocks put"
    )
    lines.append("MB/s (min / median / max over runs):")
    for name in ("backup", "backup again", "restore", "tar|zstd", "cp+sync", "write", "cat"):
        xs = [r.mb_s(name) for r in runs]
        lines.append(
            f"  {name:<14} {_fmt(min(xs)):>9} {_fmt(statistics.median(xs)):>9} {_fmt(max(xs)):>9}"
        )
    lines.append("CPU seconds (app+gateway | n0 n1 n2; of which system: app | nodes):")
    for r in runs:
        for name, p in r.phases.items():
            lines.append(
                f"  {name:<14} {p.app_cpu:5.2f} | "
                + " ".join(f"{c:5.2f}" for c in p.node_cpu)
                + f"; sys {p.app_sys:5.2f} | {p.nodes_sys:5.2f}"
            )
    lines.append(
        "gateway connections opened / requests: "
        + ", ".join(f"{r.connections[0]} / {r.connections[1]}" for r in runs)
    )
    lines.append("ratios (min / median / max; target):")
    for name in runs[0].ratios():
        xs = [r.ratios()[name] for r in runs]
        target = TARGETS.get(name)
        t = "" if target is None else (f"<= {target}" if "ms" in name else f">= {target}")
        lines.append(
            f"  {name:<24} {min(xs):>7.3f} {statistics.median(xs):>7.3f} {max(xs):>7.3f}  {t}"
        )
    return "\n".join(lines)


def missed(runs: Sequence[Run]) -> list[str]:
    out = []
    for name, target in TARGETS.items():
        value = statistics.median(r.ratios()[name] for r in runs)
        if (value > target) if "ms" in name else (value < target):
            out.append(name)
    return out


def parse_args(argv: Iterable[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a ~16 MB tree of ~600 files")
    p.add_argument("--runs", type=int, default=1, help="runs, one after the other")
    p.add_argument("--files", type=int, help="files in the tree (default 4000)")
    p.add_argument("--mb", type=float, help="tree size in MB (default 110)")
    p.add_argument("--dir", help="where to put the tree and the nodes' data")
    p.add_argument("--json", help="write the measurements here")
    p.add_argument(
        "--naive",
        action="store_true",
        help="the application's first shape: a thread trip per file, one file restored at a time",
    )
    p.add_argument(
        "--both",
        action="store_true",
        help="each run does the first shape and the current one, alternating",
    )
    p.add_argument(
        "--no-fsync",
        action="store_true",
        help="nodes with data_fsync and metadata_fsync off (not durable: to see their cost)",
    )
    p.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    p.add_argument("--full", action="store_true", help="(accepted for nox; same as default)")
    return p.parse_args(None if argv is None else list(argv))


def main(argv: Iterable[str] | None = None) -> int:
    args = parse_args(argv)
    files = args.files or (600 if args.quick else 4000)
    mb = args.mb or (16 if args.quick else 110)
    root = Path(bench_root(args.dir, need_bytes=int(mb * MB * 6)))
    try:
        tree = root / "tree"
        n, size = make_tree(tree, files, int(mb * MB))
        env = environment(str(root))
        print(f"{env['python']} on {env['platform']}, {env['cpus']} CPUs, {env['filesystem']}")
        runs: list[Run] = []
        naive_runs: list[Run] = []
        for i in range(args.runs):
            # With --both, the two shapes alternate: A B, then B A, ...
            order = [args.naive] if not args.both else [bool(i % 2), not i % 2]
            for naive in order:
                run = one_run(root, tree, n, size, naive, not args.no_fsync)
                (naive_runs if naive and args.both else runs).append(run)
                print(
                    f"run {i + 1}/{args.runs}{' (naive)' if naive else ''}: "
                    + ", ".join(f"{k} {v:.3f}" for k, v in run.ratios().items()),
                    flush=True,
                )
        if naive_runs:
            print("== the application's first shape (--naive)")
            print(report(naive_runs))
            print("== the application as docs/applications.md shows it now")
        print(report(runs))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(
                    {
                        "benchmark": "app",
                        "environment": env,
                        "naive_runs": [asdict(r) | {"ratios": r.ratios()} for r in naive_runs],
                        "runs": [
                            {
                                "tree_bytes": r.tree_bytes,
                                "files": r.files,
                                "chunks": r.chunks,
                                "blocks_put": r.blocks_put,
                                "connections_opened": r.connections[0],
                                "requests": r.connections[1],
                                "phases": {k: vars(v) for k, v in r.phases.items()},
                                "baselines": r.baselines,
                                "ratios": r.ratios(),
                            }
                            for r in runs
                        ],
                    },
                    f,
                    indent=2,
                )
        bad = missed(runs)
        print(
            f"targets: {len(TARGETS) - len(bad)}/{len(TARGETS)} met"
            + (f" (missed: {', '.join(bad)})" if bad else "")
        )
        return 1 if args.check and bad else 0
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
