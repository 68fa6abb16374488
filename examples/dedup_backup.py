"""A deduplicating backup of a directory tree into a 3-node trioblock cluster.

Run it with ``python examples/dedup_backup.py [DIRECTORY]`` (without a directory it
makes a small sample tree). It is the worked example of docs/applications.md:

- files are cut into chunks of 256 KiB; every chunk is a block (content-addressed, so a
  chunk seen before is stored once), and only the chunks the cluster lacks are sent
  (``missing_blocks``, asked per batch of chunks), a batch's missing chunks in one call
  (``put_blocks``);
- a snapshot's manifest (paths, modes, sizes, chunk hashes) is a block too; its hash is
  the snapshot's handle;
- every snapshot holds one reference per chunk it uses, and one to its manifest, under
  an owner unique to the snapshot, taken in one call (``add_references``): the cluster
  counts them on every storage node; a chunk collected between the question and the
  references (``MissingBlockError`` in the batch's error) is put again;
- a restore fetches the chunks of a group of files (up to 64 chunks, 4 MiB) with one
  call (``get_blocks``: one request per storage node, each block verified), two groups
  at once, and writes each file whole or not at all;
- deleting a snapshot removes its owner's references in one call (``remove_owner``);
  chunks no other snapshot uses are deleted by the cluster after ``gc_delay``;
- the application talks to the cluster through a gateway: it stores nothing itself.

The cluster runs in one ``trio.run`` over the in-memory network, in virtual time
(``trio.testing.MockClock``), so the GC delay passes at once; the disk work is real.
The example reads and writes its own files synchronously: under a MockClock, a task
waiting for a thread (``trio.Path``, ``to_thread``) lets virtual time leap ahead, past
the timeouts of requests still in flight. A real application on the real clock would
use ``trio.Path`` or ``trio.to_thread.run_sync`` for its file work.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import sys
import tempfile
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import trio
import trio.testing

from trioblock import Hash, ReferenceBatchError, blake2sum
from trioblock.testing import Cluster, open_cluster

log = logging.getLogger("backup")

CHUNK_SIZE = 256 * 1024
#: Chunks sent or fetched at once.
PARALLEL = 16
#: Chunks asked about in one ``missing_blocks`` call (at most 16 MiB held in memory).
BATCH = 64
#: A restore fetches the chunks of a group of files with one ``get_blocks`` call: at
#: most this many chunks and bytes per group (a larger file alone, a slice at a time).
GROUP_CHUNKS = 64
GROUP_BYTES = 4 * 1024 * 1024
#: Restore groups under way at once (memory: about this many times GROUP_BYTES).
GROUPS_IN_FLIGHT = 2
GC_DELAY = 3600.0
BLOCK_NAME = re.compile(r"[0-9a-f]{64}(\.zst)?")


class BlockClient(Protocol):
    """What the backup needs from trioblock: a gateway or a node both provide it."""

    async def put_block(self, data: bytes, *, compress: bool = True) -> Hash: ...
    async def put_blocks(self, blocks: Iterable[bytes], *, compress: bool = True) -> list[Hash]: ...
    async def get_block(self, hash: bytes) -> bytes: ...
    async def get_blocks(self, hashes: Iterable[bytes]) -> list[bytes]: ...
    async def missing_blocks(self, hashes: Iterable[bytes]) -> set[Hash]: ...
    async def add_references(self, pairs: Iterable[tuple[bytes, str | bytes]]) -> int: ...
    async def remove_owner(self, owner: str | bytes) -> int: ...


@dataclass
class Snapshot:
    """One backup: its handle (the manifest's hash) and what it took."""

    manifest: Hash
    owner: str
    files: int
    size: int
    chunks: int
    new_chunks: int


def list_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def file_mode(path: Path) -> int:
    return path.stat().st_mode & 0o7777


def write_file(target: Path, data: bytes, mode: int) -> None:
    """Write whole or not at all: a temp file renamed into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(target.name + ".partial")
    temp.write_bytes(data)
    temp.chmod(mode)
    temp.rename(target)


def _is_large(entry: dict[str, Any]) -> bool:
    return len(entry["chunks"]) > GROUP_CHUNKS or entry["size"] > GROUP_BYTES


def restore_groups(files: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Consecutive files of at most ``GROUP_CHUNKS`` chunks and ``GROUP_BYTES`` bytes
    in all (a larger file alone)."""
    groups: list[list[dict[str, Any]]] = []
    group: list[dict[str, Any]] = []
    chunks = size = 0
    for entry in files:
        if group and (
            chunks + len(entry["chunks"]) > GROUP_CHUNKS or size + entry["size"] > GROUP_BYTES
        ):
            groups.append(group)
            group, chunks, size = [], 0, 0
        group.append(entry)
        chunks += len(entry["chunks"])
        size += entry["size"]
    if group:
        groups.append(group)
    return groups


async def _parallel(items: list[Any], fn: Any, limit: int = PARALLEL) -> list[Any]:
    """``fn(item)`` for every item, at most ``limit`` at once, results in order."""
    results: list[Any] = [None] * len(items)
    limiter = trio.CapacityLimiter(limit)

    async def one(i: int, item: Any) -> None:
        async with limiter:
            results[i] = await fn(item)

    async with trio.open_nursery() as nursery:
        for i, item in enumerate(items):
            nursery.start_soon(one, i, item)
    return results


class DedupBackup:
    """Back up, restore and delete snapshots of directory trees."""

    def __init__(self, client: BlockClient) -> None:
        self.client = client

    async def _send_new(self, pending: dict[Hash, bytes]) -> int:
        """Put the chunks of ``pending`` the cluster lacks (in one call: at most
        :data:`BATCH` chunks, so memory stays bounded); return how many."""
        new = sorted(await self.client.missing_blocks(pending))
        if new:
            # PutBatchError (naming each chunk that failed) if any did not reach its
            # quorum: the backup stops, the snapshot is not recorded; run it again.
            await self.client.put_blocks([pending[h] for h in new])
        pending.clear()
        return len(new)

    async def backup(self, root: Path) -> Snapshot:
        owner = f"snapshot/{uuid.uuid4().hex}"  # unique per snapshot, never reused
        files: list[dict[str, Any]] = []
        chunks: list[Hash] = []
        pending: dict[Hash, bytes] = {}  # chunks not yet asked about
        new = 0
        for path in list_files(root):
            data = path.read_bytes()
            pieces = [data[i : i + CHUNK_SIZE] for i in range(0, len(data), CHUNK_SIZE)]
            hashes = [blake2sum(p) for p in pieces]  # the names the cluster will give them
            for h, piece in zip(hashes, pieces, strict=True):
                pending.setdefault(h, piece)
                if len(pending) >= BATCH:
                    new += await self._send_new(pending)
            chunks.extend(hashes)
            files.append(
                {
                    "path": path.relative_to(root).as_posix(),
                    "mode": file_mode(path),
                    "size": len(data),
                    "chunks": [h.hex() for h in hashes],
                }
            )
        new += await self._send_new(pending)
        manifest = json.dumps({"version": 1, "owner": owner, "files": files}).encode()
        manifest_hash = await self.client.put_block(manifest)
        # References last: a snapshot whose references are all in place is complete.
        pairs = [(h, owner) for h in sorted(set(chunks))] + [(manifest_hash, owner)]
        try:
            await self.client.add_references(pairs)
        except ReferenceBatchError as exc:
            if len(exc.missing) < len(exc.failed):
                raise  # some pairs reached no quorum: the snapshot is incomplete
            # Collected since missing_blocks said it was there: put it again (the
            # references stand). Chunks are read back from the tree for that.
            await self._put_again(root, files, set(exc.missing))
        return Snapshot(
            manifest_hash, owner, len(files), sum(f["size"] for f in files), len(chunks), new
        )

    async def _put_again(self, root: Path, files: list[dict[str, Any]], wanted: set[bytes]) -> None:
        for entry in files:
            if wanted.isdisjoint(Hash.from_hex(c) for c in entry["chunks"]):
                continue
            data = (root / entry["path"]).read_bytes()
            for i in range(0, len(data), CHUNK_SIZE):
                if blake2sum(data[i : i + CHUNK_SIZE]) in wanted:
                    await self.client.put_block(data[i : i + CHUNK_SIZE])

    async def _manifest(self, manifest: Hash) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(await self.client.get_block(manifest))
        return parsed

    async def _restore_large(self, dest: Path, entry: dict[str, Any]) -> int:
        """A file larger than a group: a slice of chunks at a time into a temp file
        renamed into place (memory: one slice)."""
        hashes = [Hash.from_hex(h) for h in entry["chunks"]]
        target = dest / entry["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = target.with_name(target.name + ".partial")
        step = GROUP_BYTES // CHUNK_SIZE
        size = 0
        with temp.open("wb") as f:
            for i in range(0, len(hashes), step):
                for block in await self.client.get_blocks(hashes[i : i + step]):
                    f.write(block)
                    size += len(block)
        if size != entry["size"]:
            temp.unlink()
            raise RuntimeError(f"{entry['path']}: restored {size} of {entry['size']}")
        temp.chmod(entry["mode"])
        temp.rename(target)
        return size

    async def _restore_group(self, dest: Path, group: list[dict[str, Any]]) -> int:
        """The files of one group: all their chunks with one ``get_blocks`` call (one
        request per storage node, not one per chunk), then each file written whole."""
        if len(group) == 1 and _is_large(group[0]):
            return await self._restore_large(dest, group[0])
        hashes = [Hash.from_hex(h) for entry in group for h in entry["chunks"]]
        blocks = iter(await self.client.get_blocks(hashes))
        written = 0
        for entry in group:
            data = b"".join([next(blocks) for _ in entry["chunks"]])
            if len(data) != entry["size"]:
                raise RuntimeError(f"{entry['path']}: restored {len(data)} of {entry['size']}")
            write_file(dest / entry["path"], data, entry["mode"])
            written += len(data)
        return written

    async def restore(self, manifest: Hash, dest: Path) -> int:
        """Write the snapshot's files under ``dest``, in groups of files fetched with one
        ``get_blocks`` call each, :data:`GROUPS_IN_FLIGHT` groups at once (most files
        are one chunk: a get per chunk would wait for each in turn); return the bytes
        written."""
        groups = restore_groups((await self._manifest(manifest))["files"])
        restored = await _parallel(
            groups, lambda group: self._restore_group(dest, group), GROUPS_IN_FLIGHT
        )
        return sum(restored)

    async def delete(self, manifest: Hash) -> int:
        """Remove every reference of the snapshot (one call); return how many."""
        return await self.client.remove_owner((await self._manifest(manifest))["owner"])


# -- the demonstration ---------------------------------------------------------------------


def make_sample_tree(root: Path, rnd: random.Random) -> None:
    """A few dozen files: text, random data, and duplicates of each."""
    (root / "docs").mkdir(parents=True)
    (root / "photos").mkdir()
    (root / "copies").mkdir()
    for i in range(12):
        words = " ".join(
            rnd.choice(["block", "store", "trio", "chunk", "dedup"]) for _ in range(9000)
        )
        (root / "docs" / f"note-{i}.txt").write_text(words)
    for i in range(6):
        (root / "photos" / f"img-{i}.raw").write_bytes(rnd.randbytes(700_000))
    for i in range(3):  # identical copies: stored once
        (root / "copies" / f"img-{i}.raw").write_bytes(
            (root / "photos" / f"img-{i}.raw").read_bytes()
        )
    (root / "empty.txt").write_bytes(b"")
    # Symbolic links are not backed up (nor followed): the tree's digest skips them too.
    (root / "docs" / "latest.txt").symlink_to("note-0.txt")
    (root / "all-photos").symlink_to("photos", target_is_directory=True)


def tree_digest(root: Path) -> dict[str, str]:
    """Path → SHA-256 of every regular file the backup covers (``list_files``)."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in list_files(root)
    }


def stored_bytes(cluster: Cluster) -> tuple[int, int]:
    """Block files and bytes in every node's data directory."""
    files = size = 0
    for node in cluster.node_ids:
        for p in cluster.data_dir(node).rglob("*"):
            if p.is_file() and BLOCK_NAME.fullmatch(p.name):
                files += 1
                size += p.stat().st_size
    return files, size


async def main(source: Path | None) -> None:
    rnd = random.Random(7)
    with tempfile.TemporaryDirectory(prefix="trioblock-backup-") as tmp:
        work = Path(tmp)
        tree = source if source is not None else work / "home"
        if source is None:
            make_sample_tree(tree, rnd)
        async with (
            open_cluster(work / "cluster", n=3, gc_delay=GC_DELAY) as cluster,
            cluster.open_gateway("backup-app") as gateway,
        ):
            app = DedupBackup(gateway)
            log.info("3 storage nodes up; the backup talks to them through a gateway")

            first = await app.backup(tree)
            first_digest = tree_digest(tree)
            files, size = stored_bytes(cluster)
            log.info(
                "snapshot 1: %d files, %d bytes, %d chunks (%d distinct); "
                "cluster stores %d block files, %d bytes (3 copies, compressed)",
                first.files,
                first.size,
                first.chunks,
                first.new_chunks,
                files,
                size,
            )

            if source is None:
                (tree / "docs" / "note-0.txt").write_text("rewritten " * 1000)
                (tree / "photos" / "img-5.raw").unlink()  # only snapshot 1 keeps it
                (tree / "photos" / "img-new.raw").write_bytes(rnd.randbytes(300_000))
            second = await app.backup(tree)
            log.info(
                "snapshot 2: %d files, %d chunks, only %d new (the rest deduplicated)",
                second.files,
                second.chunks,
                second.new_chunks,
            )

            for snap, expected, name in (
                (first, first_digest, "restore-1"),
                (second, tree_digest(tree), "restore-2"),
            ):
                written = await app.restore(snap.manifest, work / name)
                same = tree_digest(work / name) == expected
                log.info("restored %s: %d bytes, byte-identical: %s", name, written, same)
                if not same:
                    raise SystemExit(f"{name} differs from the backed-up tree")

            files, size = stored_bytes(cluster)
            log.info("both snapshots stored: %d block files, %d bytes", files, size)
            await cluster.kill("n1")
            released = await app.delete(first.manifest)
            log.info(
                "n1 crashed; snapshot 1 deleted anyway: its %d references removed "
                "(write quorum 2 of 3)",
                released,
            )
            await cluster.start("n1")
            report = await cluster.nodes["n1"].sync_references()
            log.info(
                "n1 restarted and caught up by itself: %d reference updates pulled",
                report.pulled,
            )

            await trio.sleep(GC_DELAY + 120)  # virtual time: the GC delay passes
            after_files, after_size = stored_bytes(cluster)
            log.info(
                "after gc_delay: %d block files, %d bytes: %d bytes freed on the 3 nodes",
                after_files,
                after_size,
                size - after_size,
            )
            written = await app.restore(second.manifest, work / "restore-2b")
            same = tree_digest(work / "restore-2b") == tree_digest(tree)
            log.info("snapshot 2 still restores byte-identical: %s", same)
            if not same:
                raise SystemExit("snapshot 2 damaged by the deletion of snapshot 1")
    log.info("done")


if __name__ == "__main__":
    logging.basicConfig(
        level=os.environ.get("LOGLEVEL", "INFO"), format="%(message)s", stream=sys.stdout
    )
    logging.getLogger("trioblock").setLevel(logging.WARNING)
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else None
    trio.run(main, source, clock=trio.testing.MockClock(autojump_threshold=0))
