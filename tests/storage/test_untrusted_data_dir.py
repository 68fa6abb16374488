"""The data directory is not trusted: links, FIFOs, directories and huge files in a
block's place, unreadable directories, crash leftovers.

Only regular files inside the node's data directories are block copies: nothing outside
is ever read, renamed or removed, a non-file under a block's name never blocks a read or
a put, and no read of one block goes past its size limit.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from faulty_disk import FaultyDisk

import trioblock
from trioblock import DataDir, blake2sum
from trioblock._core.block import encode_block
from trioblock._core.datalayout import DataLayout
from trioblock._storage.blockfiles import BlockStore

DATA = b"a block that lives outside the data directory\n" * 40
H = blake2sum(DATA)
HX = H.hex()


def block_file(root: Path, *, compressed: bool = True) -> Path:
    return root / HX[:2] / HX[2:4] / (HX + (".zst" if compressed else ""))


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (links not followed) with its content."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory next to the data directory, holding a valid and a corrupt file."""
    out = tmp_path / "outside"
    sub = out / HX[2:4]
    sub.mkdir(parents=True)
    (out / "valid").write_bytes(encode_block(DATA, 3).payload)
    (sub / (HX + ".zst")).write_bytes(b"not a zstd frame at all")
    (sub / HX).write_bytes(b"not the plaintext either")
    return out


# -- symbolic links -------------------------------------------------------------------------


async def test_a_link_named_like_a_block_is_neither_served_nor_renamed(
    open_node: Any, data_dir: Path, outside: Path
) -> None:
    before = snapshot(outside)
    async with open_node() as bm:
        link = block_file(data_dir)
        link.parent.mkdir(parents=True)
        link.symlink_to(outside / "valid")  # valid content, outside the data directory
        with pytest.raises(trioblock.MissingBlockError):
            await bm.get_block(H)
        assert not await bm.has_local_block(H)
        link.unlink()
        link.symlink_to(outside / HX[2:4] / (HX + ".zst"))  # corrupt content
        with pytest.raises(trioblock.MissingBlockError):
            await bm.get_block(H)
        assert link.is_symlink()  # neither read nor renamed
    assert snapshot(outside) == before


async def test_a_linked_subdirectory_is_never_entered(
    open_node: Any, data_dir: Path, outside: Path, autojump_clock: Any
) -> None:
    """With ``aa`` a link out of the data directory, neither reads, scrub nor purge touch
    what it points to (they renamed and unlinked files there)."""
    before = snapshot(outside)
    async with open_node() as bm:
        (data_dir / HX[:2]).symlink_to(outside, target_is_directory=True)
        with pytest.raises(trioblock.MissingBlockError):
            await bm.get_block(H)
        assert snapshot(outside) == before
        await bm.scrub("start")
        with trio.fail_after(86400):
            while bm.scrub_status().last_completed is None:  # noqa: ASYNC110 (public API)
                await trio.sleep(1)
        assert bm.scrub_status().corruptions_found == 0
        assert snapshot(outside) == before
        bm.incref(H)
        bm.purge(H)
        await trio.sleep(1)
    assert snapshot(outside) == before


async def test_a_write_through_a_linked_subdirectory_fails_clearly(
    tmp_path: Path, outside: Path
) -> None:
    store = make_store(tmp_path / "data")
    (tmp_path / "data" / HX[:2]).symlink_to(outside, target_is_directory=True)
    before = snapshot(outside)
    with pytest.raises(OSError, match="never follows links"):
        await store.write_block(H, encode_block(DATA, 3), 1_700_000_000_000)
    assert snapshot(outside) == before


# -- FIFOs and directories in a block's place -----------------------------------------------


@contextmanager
def fifo_unjammer(fifo: Path, after: float) -> Iterator[None]:
    """Open ``fifo`` for writing after ``after`` seconds unless the test is done, so that
    a reader blocked on it (the bug) is released instead of hanging the suite."""
    done = threading.Event()

    def unjam() -> None:
        if done.wait(after):
            return
        while not done.wait(0.1):
            for path in [fifo, *fifo.parent.glob(fifo.name + "*")]:
                try:
                    fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
                except OSError:
                    continue
                os.close(fd)

    thread = threading.Thread(target=unjam, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


async def test_a_fifo_named_like_a_block_blocks_neither_get_nor_put(
    open_node: Any, data_dir: Path
) -> None:
    async with open_node() as bm:
        fifo = block_file(data_dir)
        fifo.parent.mkdir(parents=True)
        os.mkfifo(fifo)
        started = time.monotonic()
        with fifo_unjammer(fifo, after=5.0):
            with pytest.raises(trioblock.MissingBlockError):
                await bm.get_block(H)
            assert time.monotonic() - started < 4.0, "get_block blocked on the FIFO"
            assert await bm.put_block(DATA) == H
            assert time.monotonic() - started < 4.0, "put_block blocked on the FIFO"
        assert await bm.get_block(H) == DATA
        # The FIFO was renamed aside, never opened; the block is where reads look.
        aside = fifo.with_name(fifo.name + ".corrupted")
        assert aside.is_fifo()
        assert fifo.is_file() and not fifo.is_symlink()


async def test_a_directory_named_like_a_block_does_not_stop_it_being_stored(
    open_node: Any, data_dir: Path
) -> None:
    async with open_node() as bm:
        squatter = block_file(data_dir)
        (squatter / "inside").mkdir(parents=True)
        with pytest.raises(trioblock.MissingBlockError):
            await bm.get_block(H)
        assert await bm.put_block(DATA) == H
        assert await bm.get_block(H) == DATA
        aside = squatter.with_name(squatter.name + ".corrupted")
        assert (aside / "inside").is_dir()


async def test_a_link_named_like_a_block_is_set_aside_by_a_put(
    open_node: Any, data_dir: Path, outside: Path
) -> None:
    before = snapshot(outside)
    async with open_node() as bm:
        link = block_file(data_dir)
        link.parent.mkdir(parents=True)
        link.symlink_to(outside / HX[2:4] / (HX + ".zst"))
        assert await bm.put_block(DATA) == H
        assert await bm.get_block(H) == DATA
        assert link.with_name(link.name + ".corrupted").is_symlink()
    assert snapshot(outside) == before


# -- bounded reads ----------------------------------------------------------------------------


def make_store(
    root: Path, *, max_block_size: int = 1 << 20, disk: FaultyDisk | None = None
) -> BlockStore:
    root.mkdir(parents=True, exist_ok=True)
    return BlockStore(
        DataLayout.initial([DataDir(root)]),
        compression=True,
        fsync=False,
        limiter=trio.CapacityLimiter(2),
        max_block_size=max_block_size,
        disk=disk,
    )


def sparse_file(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True)
    with open(path, "wb") as f:
        f.truncate(size)


def bytes_read() -> int:
    """Bytes this process has read through read(2) so far (Linux)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


needs_proc_io = pytest.mark.skipif(
    not Path("/proc/self/io").exists(), reason="needs /proc/self/io to count bytes read"
)


@needs_proc_io
@pytest.mark.parametrize("compressed", [True, False], ids=["zst", "plain"])
async def test_a_huge_sparse_file_named_like_a_block_is_not_read(
    tmp_path: Path, compressed: bool
) -> None:
    store = make_store(tmp_path / "data", max_block_size=1 << 20)
    # Sparse: costs no disk, would cost 256 MiB of memory.
    sparse_file(block_file(tmp_path / "data", compressed=compressed), 256 << 20)
    limit = (2 << 20) + 4096
    start = bytes_read()
    with pytest.raises(trioblock.CorruptBlockError):
        store.read_verified_sync(H)
    loc = store.find_sync(H)
    assert loc is not None
    assert store.verify_file_sync(loc) is False
    chunks = 0
    with pytest.raises(trioblock.CorruptBlockError):
        async with store.open_stream(loc) as stream:
            async for chunk in stream:
                chunks += len(chunk)
    assert bytes_read() - start < 3 * limit
    # A read through the node quarantines it like any corrupt copy.
    assert await store.quarantine(loc) is not None
    assert store.find_sync(H) is None


async def test_a_link_to_dev_zero_named_like_a_block_is_not_read(
    open_node: Any, data_dir: Path
) -> None:
    async with open_node(max_block_size=1 << 20) as bm:
        link = block_file(data_dir)
        link.parent.mkdir(parents=True)
        link.symlink_to("/dev/zero")
        with pytest.raises(trioblock.MissingBlockError):
            await bm.get_block(H)
        assert link.is_symlink()


# -- unreadable directories and crash leftovers ------------------------------------------------


def write_file(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@contextmanager
def unlistable(*suffixes: str) -> Iterator[list[str]]:
    """``os.scandir`` fails with EACCES on directories whose path ends with a suffix
    (what ``chmod 0`` does, except for root, who runs these tests in containers)."""
    real = os.scandir
    refused: list[str] = []

    def scandir(path: Any = ".") -> Any:
        where = os.readlink(f"/proc/self/fd/{path}") if isinstance(path, int) else str(path)
        if where.endswith(suffixes):
            refused.append(where)
            raise PermissionError(13, "Permission denied", where)
        return real(path)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "scandir", scandir)
        yield refused


async def test_start_up_goes_on_past_an_unreadable_directory(
    open_node: Any, data_dir: Path
) -> None:
    async with open_node() as bm:
        h = await bm.put_block(DATA)
    with unlistable(f"/{HX[:2]}/{HX[2:4]}") as refused:
        async with open_node() as bm:
            assert await bm.get_block(h) == DATA
    assert refused


async def test_a_marker_temp_file_left_by_a_first_start_up_crash_is_removed(
    open_node: Any, data_dir: Path
) -> None:
    leftover = data_dir / "trioblock-marker.tmp0123abcd"
    write_file(leftover, b"n1:0000\n")
    async with open_node():
        pass
    assert not leftover.exists()
    assert (data_dir / "trioblock-marker").is_file()


# -- temp files of writes in progress --------------------------------------------------------


def test_a_sweep_never_removes_the_temp_file_of_a_write_in_progress(tmp_path: Path) -> None:
    disk = FaultyDisk()
    store = make_store(tmp_path / "data", disk=disk)
    stale = block_file(tmp_path / "data").with_name(HX + ".zst.tmpdeadbeef")
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"left by a crash")
    swept: list[int] = []
    # Mid-write, the temp file exists: a sweep runs now.
    disk.before["set_mtime"] = lambda *args: swept.append(store.cleanup_temps_sync())
    store.write_sync(H, encode_block(DATA, 3), 1_700_000_000_000)
    del disk.before["set_mtime"]
    assert swept == [1]
    assert not stale.exists()
    assert store.read_verified_sync(H) is not None


async def test_the_background_sweep_removes_stale_temp_files(tmp_path: Path) -> None:
    root = tmp_path / "data"
    store = make_store(root)
    await store.write_block(H, encode_block(DATA, 3), 1_700_000_000_000)
    stale = [
        block_file(root).with_name(HX + ".zst.tmp0123abcd"),
        root / "ff" / "ee" / ("ffee" + "0" * 60 + ".tmpffffffff"),
        root / "trioblock-marker.tmp00000000",
    ]
    for p in stale:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    keep = root / "ff" / "ee" / "notes.tmp"
    keep.write_bytes(b"not ours")
    assert await store.sweep_temps() == len(stale)
    assert not any(p.exists() for p in stale)
    assert keep.exists() and block_file(root).exists()


async def test_a_node_is_ready_without_walking_its_blocks(open_node: Any, data_dir: Path) -> None:
    """Each directory listing costs 0.05 s here (a slow disk, or millions of blocks): the
    node must be ready long before its ~20 block directories are listed."""
    async with open_node() as bm:
        for i in range(10):
            await bm.put_block(b"block %d" % i)
    disk = FaultyDisk()
    disk.delay["list_dir"] = 0.05
    started = time.monotonic()
    async with open_node(disk=disk):
        ready_after = time.monotonic() - started
    assert ready_after < 0.5, f"the node took {ready_after:.1f} s to be ready"
