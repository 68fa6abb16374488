"""Block files in a data directory: naming, durable writes, lookup, quarantine, temp files."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
import trio
from faulty_disk import FaultyDisk

import trioblock
from trioblock import ConfigError, DataDir, DiskError, blake2sum
from trioblock._core.block import BlockHeader, encode_block
from trioblock._core.datalayout import DataLayout
from trioblock._storage.blockfiles import MARKER_NAME, BlockStore, WriteOutcome, block_path
from trioblock._storage.durable import TEMP_NAME_TRIES


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def temp_files_under(root: Path) -> list[Path]:
    return [p for p in files_under(root) if ".tmp" in p.name]


def block_file(root: Path, h: bytes, *, compressed: bool = True) -> Path:
    hx = bytes(h).hex()
    return root / hx[:2] / hx[2:4] / (hx + (".zst" if compressed else ""))


DATA = b"some block content\n" * 50
H = blake2sum(DATA)
NOW_MSEC = 1_700_000_000_000


def make_store(
    root: Path, *, compression: bool = True, fsync: bool = True, disk: FaultyDisk | None = None
) -> BlockStore:
    return BlockStore(
        DataLayout.initial([DataDir(root)]),
        compression=compression,
        fsync=fsync,
        limiter=trio.CapacityLimiter(2),
        max_block_size=1 << 20,
        disk=disk,
    )


def test_block_path_scheme(tmp_path: Path) -> None:
    hx = H.hex()
    assert block_path(tmp_path, H, BlockHeader.PLAIN) == tmp_path / hx[:2] / hx[2:4] / hx
    assert block_path(tmp_path, H, BlockHeader.COMPRESSED) == (
        tmp_path / hx[:2] / hx[2:4] / (hx + ".zst")
    )


@pytest.mark.parametrize("level", [None, 1], ids=["plain", "zstd"])
def test_write_creates_exactly_the_final_file(tmp_path: Path, level: int | None) -> None:
    store = make_store(tmp_path)
    block = encode_block(DATA, level)
    assert store.write_sync(H, block, NOW_MSEC) is WriteOutcome.WRITTEN
    final = block_file(tmp_path, H, compressed=level is not None)
    assert files_under(tmp_path) == [final]
    assert final.read_bytes() == block.payload
    assert final.stat().st_mtime_ns == NOW_MSEC * 1_000_000
    loc = store.find_sync(H)
    assert loc is not None and loc.path == final and loc.header is block.header
    assert loc.written_at_msec == NOW_MSEC


def test_durable_write_order_is_write_fsync_rename_fsync_dir(tmp_path: Path) -> None:
    disk = FaultyDisk()
    store = make_store(tmp_path, disk=disk)
    store.write_sync(H, encode_block(DATA, 1), NOW_MSEC)
    final = H.hex() + ".zst"
    (create,) = [c for c in disk.calls if c.op == "create_at"]
    dir, tmp = create.args
    assert tmp.startswith(final + ".tmp")
    file = create.result
    after = disk.calls[disk.calls.index(create) :]
    steps = [
        c.op
        for c in after
        if (c.op in ("write", "fsync", "close") and c.args[0] == file)
        or (c.op == "rename_at" and c.args == (dir, tmp, final))
        or (c.op == "fsync" and c.args[0] == dir)
    ]
    assert steps[-4:] == ["fsync", "close", "rename_at", "fsync"]
    assert set(steps[:-4]) == {"write"}
    assert temp_files_under(tmp_path) == []


def test_no_fsync_without_data_fsync(tmp_path: Path) -> None:
    disk = FaultyDisk()
    store = make_store(tmp_path, fsync=False, disk=disk)
    assert store.write_sync(H, encode_block(DATA, 1), NOW_MSEC) is WriteOutcome.WRITTEN
    assert "create_at" in disk.ops() and "fsync" not in disk.ops()
    assert temp_files_under(tmp_path) == []


@pytest.mark.parametrize("fail_at", ["write", "fsync", "rename_at"])
@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EIO])
def test_failed_write_leaves_neither_temp_nor_final_file(
    tmp_path: Path, fail_at: str, err: int
) -> None:
    disk = FaultyDisk()

    def partial(real: object, file: int, data: bytes) -> None:
        os.write(file, b"partial")

    disk.fail(fail_at, err, first=partial if fail_at == "write" else None)
    store = make_store(tmp_path, disk=disk)
    with pytest.raises(OSError) as info:
        store.write_sync(H, encode_block(DATA, 1), NOW_MSEC)
    assert info.value.errno == err
    assert files_under(tmp_path) == []
    assert store.find_sync(H) is None
    # A failed fsync is never retried as a success: the write failed, nothing is there.
    assert disk.ops().count(fail_at) == 1


class Crash(BaseException):
    """Stands for a KeyboardInterrupt or a cancellation delivered mid-write."""


def test_base_exception_mid_write_removes_the_temp_file(tmp_path: Path) -> None:
    disk = FaultyDisk()
    disk.fail("set_mtime", Crash())
    store = make_store(tmp_path, disk=disk)
    with pytest.raises(Crash):
        store.write_sync(H, encode_block(DATA, 1), NOW_MSEC)
    assert files_under(tmp_path) == []


def test_existing_copy_is_kept(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    compressed = encode_block(DATA, 1)
    store.write_sync(H, compressed, NOW_MSEC)
    assert store.write_sync(H, compressed, NOW_MSEC) is WriteOutcome.KEPT
    # A plain copy never replaces a compressed one.
    assert store.write_sync(H, encode_block(DATA, None), NOW_MSEC) is WriteOutcome.KEPT
    assert files_under(tmp_path) == [block_file(tmp_path, H)]


def test_plain_copy_is_replaced_by_a_compressed_one(tmp_path: Path) -> None:
    store = make_store(tmp_path, compression=False)
    store.write_sync(H, encode_block(DATA, None), NOW_MSEC)
    assert store.write_sync(H, encode_block(DATA, None), NOW_MSEC) is WriteOutcome.KEPT
    assert store.write_sync(H, encode_block(DATA, 1), NOW_MSEC) is WriteOutcome.REPLACED
    assert files_under(tmp_path) == [block_file(tmp_path, H)]


def test_keeping_a_copy_refreshes_its_mtime_forward_only(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    block = encode_block(DATA, 1)
    store.write_sync(H, block, NOW_MSEC)
    store.write_sync(H, block, NOW_MSEC + 5000)
    assert block_file(tmp_path, H).stat().st_mtime_ns == (NOW_MSEC + 5000) * 1_000_000
    store.write_sync(H, block, NOW_MSEC)
    assert block_file(tmp_path, H).stat().st_mtime_ns == (NOW_MSEC + 5000) * 1_000_000


@pytest.mark.parametrize("compression", [True, False])
def test_lookup_order_follows_the_compression_setting(tmp_path: Path, compression: bool) -> None:
    plain = block_file(tmp_path, H, compressed=False)
    zst = block_file(tmp_path, H, compressed=True)
    plain.parent.mkdir(parents=True)
    plain.write_bytes(encode_block(DATA, None).payload)
    zst.write_bytes(encode_block(DATA, 1).payload)
    loc = make_store(tmp_path, compression=compression).find_sync(H)
    assert loc is not None
    assert loc.path == (zst if compression else plain)
    # The other encoding is still found when it is the only one.
    (zst if compression else plain).unlink()
    other = make_store(tmp_path, compression=compression).find_sync(H)
    assert other is not None and other.path == (plain if compression else zst)


@pytest.mark.parametrize("level", [None, 1], ids=["plain", "zstd"])
def test_read_verified_returns_plaintext(tmp_path: Path, level: int | None) -> None:
    store = make_store(tmp_path)
    store.write_sync(H, encode_block(DATA, level), NOW_MSEC)
    found = store.read_verified_sync(H)
    assert found is not None and found[0] == DATA
    assert store.read_verified_sync(blake2sum(b"absent")) is None


@pytest.mark.parametrize(
    ("level", "suffix"), [(None, ".corrupted"), (1, ".zst.corrupted")], ids=["plain", "zstd"]
)
async def test_corrupt_copy_is_quarantined(tmp_path: Path, level: int | None, suffix: str) -> None:
    store = make_store(tmp_path)
    store.write_sync(H, encode_block(DATA, level), NOW_MSEC)
    path = block_file(tmp_path, H, compressed=level is not None)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(trioblock.CorruptBlockError):
        await store.read_verified(H)
    target = path.parent / (H.hex() + suffix)
    assert files_under(tmp_path) == [target]
    assert target.read_bytes() == bytes(raw)
    assert store.find_sync(H) is None


def test_quarantine_leaves_a_valid_copy_alone(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    store.write_sync(H, encode_block(DATA, 1), NOW_MSEC)
    loc = store.find_sync(H)
    assert loc is not None
    assert store.quarantine_sync(loc) is None
    assert files_under(tmp_path) == [block_file(tmp_path, H)]


async def test_delete_removes_the_copy_without_temp_leftovers(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    store.write_sync(H, encode_block(DATA, 1), NOW_MSEC)
    loc = store.find_sync(H)
    assert loc is not None
    async with store.locks.hold(H):
        trash = store.detach_now(loc)
        assert trash is not None
        await store.discard(trash)
        assert store.detach_now(loc) is None
    assert files_under(tmp_path) == []


def test_cleanup_removes_only_temp_files(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    store.write_sync(H, encode_block(DATA, 1), NOW_MSEC)
    final = block_file(tmp_path, H)
    stale = [
        final.with_name(final.name + ".tmp0123abcd"),
        final.with_name(H.hex() + ".tmpdeadbeef"),
        final.with_name(final.name + ".corrupted.tmp00000000"),
    ]
    keep = [
        final,
        final.with_name(final.name + ".tmpXYZ"),  # not 8 hex digits
        final.with_name(H.hex() + ".corrupted"),
    ]
    for p in stale + keep[1:]:
        p.write_bytes(b"junk")
    assert store.cleanup_temps_sync() == len(stale)
    assert files_under(tmp_path) == sorted(keep)


async def test_stale_temp_files_are_removed_after_start_up(open_node, data_dir: Path) -> None:
    async with open_node() as bm:
        h = await bm.put_block(DATA)
    final = block_file(data_dir, h)
    leftover = final.with_name(final.name + ".tmp" + "ab12cd34")
    leftover.write_bytes(b"half a block")
    other = data_dir / "00" / "01"
    other.mkdir(parents=True)
    (other / ("00" * 32 + ".tmpffffffff")).write_bytes(b"x")
    async with open_node() as bm:
        # Removed at start-up, or by a sweep in the background soon after.
        with trio.fail_after(10):
            while temp_files_under(data_dir):  # noqa: ASYNC110 (a disk state, no event)
                await trio.sleep(0.01)
        assert await bm.get_block(h) == DATA


async def test_changed_marker_is_a_config_error(open_node, data_dir: Path) -> None:
    async with open_node():
        pass
    marker = data_dir / MARKER_NAME
    assert marker.is_file()
    marker.write_text("someone-else:0000\n")
    with pytest.raises(ConfigError) as info:
        async with open_node():
            pass
    assert info.value.field == "data_dir"


async def test_missing_marker_is_a_config_error(open_node, data_dir: Path) -> None:
    async with open_node() as bm:
        await bm.put_block(DATA)
    (data_dir / MARKER_NAME).unlink()
    with pytest.raises(ConfigError) as info:
        async with open_node():
            pass
    assert info.value.field == "data_dir"


def test_a_temp_name_already_taken_is_drawn_again(tmp_path: Path) -> None:
    """A temp name taken (by another process) is refused by O_EXCL and another is
    drawn; the other writer's file is left alone."""
    disk = FaultyDisk()
    store = make_store(tmp_path, disk=disk)
    final = block_file(tmp_path, H)
    final.parent.mkdir(parents=True)

    def taken(real: object, dir: int, name: str) -> None:
        (final.parent / name).write_bytes(b"another writer's")

    disk.fail("create_at", FileExistsError(errno.EEXIST, "taken"), first=taken)
    assert store.write_sync(H, encode_block(DATA, 1), NOW_MSEC) is WriteOutcome.WRITTEN
    first, second = [c.args[1] for c in disk.calls if c.op == "create_at"]
    assert first != second
    assert (final.parent / first).read_bytes() == b"another writer's"
    assert final.is_file()
    assert temp_files_under(tmp_path) == [final.parent / first]


def test_a_write_gives_up_when_every_temp_name_is_taken(tmp_path: Path) -> None:
    disk = FaultyDisk()
    disk.fail("create_at", FileExistsError(errno.EEXIST, "taken"), times=TEMP_NAME_TRIES)
    store = make_store(tmp_path, disk=disk)
    with pytest.raises(DiskError) as info:  # naming the directory
        store.write_sync(H, encode_block(DATA, 1), NOW_MSEC)
    assert isinstance(info.value.__cause__, FileExistsError)
    assert info.value.directory == str(tmp_path)
    assert disk.ops().count("create_at") == TEMP_NAME_TRIES
    assert files_under(tmp_path) == []


def test_a_forked_child_draws_other_temp_names_than_its_parent() -> None:
    from trioblock._storage.paths import temp_suffix

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        os.write(write, "".join(temp_suffix() for _ in range(4)).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read) as pipe:
        child = pipe.read()
    parent = "".join(temp_suffix() for _ in range(4))
    assert len(child) == len(parent) == 4 * len(".tmp00000000")
    assert child != parent
