"""``SimulatedDisk``'s faults: durability and power loss, ``fail`` (fsyncgate for
fsync), capacity, latency, rot, and determinism from the seed."""

from __future__ import annotations

import errno
import secrets
import time

import pytest

from trioblock.testing import PowerLoss, SimulatedDisk

ROOT = "/sim/data"
PAYLOAD = bytes(range(256)) * 8  # 2048 bytes: four sectors


def fresh(seed: int = 0) -> SimulatedDisk:
    disk = SimulatedDisk(seed)
    disk.close(disk.make_dir(ROOT, "", fsync=False)[0])
    return disk


def write_block(
    disk: SimulatedDisk,
    name: str = "blk",
    data: bytes = PAYLOAD,
    *,
    fsync_file: bool,
    fsync_dir: bool,
    via_temp: bool = True,
) -> None:
    """The node's write sequence: temp file, write, (fsync), rename, (fsync the dir)."""
    d = disk.make_dir(ROOT, "ab/cd", fsync=True)[0]
    try:
        tmp = name + ".tmp00000000" if via_temp else name
        f = disk.create_at(d, tmp)
        try:
            assert disk.write(f, data) == len(data)
            if fsync_file:
                disk.fsync(f)
        finally:
            disk.close(f)
        if via_temp:
            disk.rename_at(d, tmp, name)
        if fsync_dir:
            disk.fsync(d)
    finally:
        disk.close(d)


def names(disk: SimulatedDisk) -> list[str]:
    return [p.rsplit("/", 1)[1] for p in disk.files(ROOT)]


# -- durability -----------------------------------------------------------------------


@pytest.mark.parametrize("outcome", ["drop", "tear", "keep", "random"])
def test_a_file_and_its_name_synced_survive_any_power_loss(outcome: str) -> None:
    disk = fresh()
    write_block(disk, fsync_file=True, fsync_dir=True)
    assert disk.pending() == []
    done = disk.power_loss(outcome)  # type: ignore[arg-type]
    assert done == PowerLoss()
    assert names(disk) == ["blk"]
    assert disk.read_file(f"{ROOT}/ab/cd/blk") == PAYLOAD


def test_unsynced_data_is_dropped_under_its_durable_name() -> None:
    disk = fresh()
    write_block(disk, fsync_file=False, fsync_dir=True)
    assert disk.read_file(f"{ROOT}/ab/cd/blk") == PAYLOAD  # the page cache
    assert disk.durable_file(f"{ROOT}/ab/cd/blk") == b""
    done = disk.power_loss("drop")
    assert done.dropped == (f"write {ROOT}/ab/cd/blk.tmp00000000 [0:2048]",)
    assert disk.read_file(f"{ROOT}/ab/cd/blk") == b""


def test_unsynced_data_is_torn_at_a_sector_boundary() -> None:
    disk = fresh()
    write_block(disk, fsync_file=False, fsync_dir=False)
    done = disk.power_loss("tear")
    assert len(done.torn) == 1 and not done.dropped
    kept = disk.read_file(f"{ROOT}/ab/cd/blk")  # create and rename kept: a torn final name
    assert len(kept) in (512, 1024, 1536)
    assert kept == PAYLOAD[: len(kept)]


def test_a_write_within_one_sector_cannot_tear() -> None:
    disk = fresh()
    write_block(disk, data=b"small", fsync_file=False, fsync_dir=False)
    done = disk.power_loss("tear")
    assert not done.torn
    assert disk.read_file(f"{ROOT}/ab/cd/blk") == b"small"


def test_an_unsynced_rename_is_lost_and_the_temp_name_comes_back() -> None:
    disk = fresh()
    d = disk.make_dir(ROOT, "ab/cd", fsync=True)[0]
    f = disk.create_at(d, "blk.tmp00000000")
    disk.write(f, PAYLOAD)
    disk.fsync(f)
    disk.close(f)
    disk.fsync(d)  # the temp file is durable
    disk.rename_at(d, "blk.tmp00000000", "blk")
    disk.close(d)
    assert names(disk) == ["blk"]
    done = disk.power_loss("drop")
    assert done.dropped == (f"rename {ROOT}/ab/cd/blk.tmp00000000 -> blk",)
    assert names(disk) == ["blk.tmp00000000"]
    assert disk.read_file(f"{ROOT}/ab/cd/blk.tmp00000000") == PAYLOAD


def test_an_unsynced_unlink_is_undone_and_a_synced_one_is_not() -> None:
    disk = fresh()
    disk.write_file(f"{ROOT}/ab/cd/a", b"A")
    disk.write_file(f"{ROOT}/ab/cd/b", b"B")
    d = disk.open_dir(ROOT, "ab/cd")
    disk.unlink_at(d, "a")
    disk.fsync(d)
    disk.unlink_at(d, "b")
    disk.close(d)
    assert names(disk) == []
    disk.power_loss("drop")
    assert names(disk) == ["b"]


def test_a_directory_made_without_fsync_can_vanish_with_its_content() -> None:
    disk = fresh()
    disk.close(disk.make_dir(ROOT, "ab/cd", fsync=False)[0])
    write_block(disk, fsync_file=True, fsync_dir=True)  # the file is, its parents are not
    assert disk.durable_file(f"{ROOT}/ab/cd/blk") is None
    disk.power_loss("drop")
    assert disk.files(ROOT) == []
    assert not disk.exists(f"{ROOT}/ab")


def test_open_handles_are_invalid_after_a_power_loss() -> None:
    disk = fresh()
    d = disk.open_dir(ROOT)
    disk.power_loss()
    with pytest.raises(OSError) as info:
        disk.list_dir(d)
    assert info.value.errno == errno.EBADF
    with pytest.raises(OSError):
        disk.close(d)


def test_each_change_is_decided_on_its_own() -> None:
    """Over many seeds, a random power loss keeps, drops and tears unsynced changes
    independently: every combination of (name, data) outcomes shows up."""
    seen: set[tuple[bool, int]] = set()
    for seed in range(60):
        disk = fresh(seed)
        write_block(disk, fsync_file=False, fsync_dir=False)
        disk.power_loss()
        left = disk.files(ROOT)
        data = disk.read_file(left[0]) if left else b""
        seen.add((bool(left) and left[0].endswith("/blk"), len(data)))
        assert data == PAYLOAD[: len(data)] and len(data) % 512 == 0
    assert {(True, 0), (True, 2048), (False, 0), (False, 2048)} <= seen
    assert any(0 < size < 2048 for _named, size in seen)


# -- determinism --------------------------------------------------------------------


def run_script(seed: int) -> tuple[PowerLoss, list[str], list[bytes], list[int]]:
    disk = fresh(seed)
    for i in range(8):
        write_block(disk, f"b{i}", PAYLOAD[: 300 * (i + 1)], fsync_file=i % 3 == 0, fsync_dir=False)
    done = disk.power_loss()
    files = disk.files(ROOT)
    contents = [disk.read_file(p) for p in files]
    disk.write_file(f"{ROOT}/rotting", PAYLOAD)
    return done, files, contents, disk.rot(f"{ROOT}/rotting", 3)


def test_the_same_seed_gives_the_same_outcome_and_another_seed_another() -> None:
    assert run_script(11) == run_script(11)
    assert any(run_script(11) != run_script(seed) for seed in (12, 13, 14))


def survivors(root: str, order: list[int]) -> dict[str, bytes]:
    """Blocks written (without any fsync) through temp files with random names, in
    ``order``, below ``root``: what a power loss leaves, by path below the root."""
    disk = SimulatedDisk(5)
    d = disk.make_dir(root, "", fsync=False)[0]
    for i in order:
        tmp = f"b{i}.tmp{secrets.token_hex(4)}"
        f = disk.create_at(d, tmp)
        disk.write(f, PAYLOAD[: 200 * (i + 1)])
        disk.close(f)
        disk.rename_at(d, tmp, f"b{i}")
    disk.close(d)
    disk.power_loss()
    return {p.removeprefix(root).split(".tmp")[0]: disk.read_file(p) for p in disk.files(root)}


def test_a_power_loss_depends_on_the_changes_not_on_their_order_nor_on_the_root() -> None:
    """Concurrent tasks make their changes in any order, and tests run in other
    directories: the same seed still loses the same things."""
    first = survivors("/a/data", list(range(10)))
    assert survivors("/elsewhere/data", list(reversed(range(10)))) == first
    assert len(first) < 10 or any(len(v) % 200 for v in first.values())  # something lost


# -- fail -------------------------------------------------------------------------------


def test_fail_open_read_write_list_rename_unlink_stat_raise_their_errno() -> None:
    disk = fresh()
    disk.write_file(f"{ROOT}/ab/cd/x.zst", b"data")
    disk.write_file(f"{ROOT}/ab/cd/y", b"data")
    d = disk.open_dir(ROOT, "ab/cd")

    def raises(code: int, call: object, *args: object) -> None:
        with pytest.raises(OSError) as info:
            call(*args)  # type: ignore[operator]
        assert info.value.errno == code

    disk.fail("open", "*.zst", errno.EACCES)
    f = disk.open_file(ROOT, "ab/cd/y")[0]  # not matching: opens
    with pytest.raises(PermissionError) as denied:
        disk.open_file(ROOT, "ab/cd/x.zst")
    assert denied.value.filename == f"{ROOT}/ab/cd/x.zst"
    disk.close(disk.open_file(ROOT, "ab/cd/x.zst")[0])  # times=1: used up
    disk.fail("read", "ab/cd/y", times=2)
    raises(errno.EIO, disk.read, f, 10)
    raises(errno.EIO, disk.read, f, 10)
    assert disk.read(f, 10) == b"data"  # nothing was read by the failed calls
    disk.close(f)
    disk.fail("list", "ab/cd")
    raises(errno.EIO, disk.list_dir, d)
    assert len(disk.list_dir(d)) == 2
    disk.fail("rename", "*/z")  # matches the destination
    raises(errno.EIO, disk.rename_at, d, "y", "z")
    disk.fail("unlink", errno=errno.EROFS)
    raises(errno.EROFS, disk.unlink_at, d, "y")
    disk.fail("stat", "ab/cd/y")
    raises(errno.EIO, disk.lstat_at, d, "y")
    assert names(disk) == ["x.zst", "y"]  # nothing was renamed nor removed
    g = disk.create_at(d, "w")
    disk.fail("write", errno=errno.ENOSPC)
    raises(errno.ENOSPC, disk.write, g, b"abc")
    assert disk.read_file(f"{ROOT}/ab/cd/w") == b""
    disk.close(g)
    disk.close(d)
    assert [(op, code) for op, _path, code in disk.injected] == [
        ("open", errno.EACCES),
        ("read", errno.EIO),
        ("read", errno.EIO),
        ("list", errno.EIO),
        ("rename", errno.EIO),
        ("unlink", errno.EROFS),
        ("stat", errno.EIO),
        ("write", errno.ENOSPC),
    ]


def test_a_fault_without_times_lasts_until_cleared() -> None:
    disk = fresh()
    disk.fail("open", "", times=None)  # the data directory itself
    for _ in range(3):
        with pytest.raises(OSError):
            disk.open_dir(ROOT)
    disk.clear_faults()
    disk.close(disk.open_dir(ROOT))
    with pytest.raises(ValueError):
        disk.fail("truncate")


def test_a_failed_fsync_forgets_the_data_and_the_next_fsync_succeeds() -> None:
    """fsyncgate: the data stays readable (page cache) but is never made durable."""
    disk = fresh()
    d = disk.make_dir(ROOT, "ab/cd", fsync=True)[0]
    f = disk.create_at(d, "blk")
    disk.fsync(d)
    disk.write(f, PAYLOAD)
    disk.fail("fsync", "ab/cd/blk")
    with pytest.raises(OSError) as info:
        disk.fsync(f)
    assert info.value.errno == errno.EIO
    disk.fsync(f)  # "succeeds": nothing left to sync
    assert disk.read_file(f"{ROOT}/ab/cd/blk") == PAYLOAD
    assert disk.durable_file(f"{ROOT}/ab/cd/blk") == b""
    disk.close(f)
    disk.close(d)
    disk.power_loss("keep")  # even keeping every pending change
    assert disk.read_file(f"{ROOT}/ab/cd/blk") == b""


def test_a_failed_directory_fsync_forgets_its_new_names() -> None:
    disk = fresh()
    d = disk.make_dir(ROOT, "ab/cd", fsync=True)[0]
    f = disk.create_at(d, "blk")
    disk.close(f)
    disk.fail("fsync", "ab/cd")
    with pytest.raises(OSError):
        disk.fsync(d)
    disk.fsync(d)
    disk.close(d)
    assert names(disk) == ["blk"]
    disk.power_loss("keep")
    assert names(disk) == []


# -- capacity, latency, rot ----------------------------------------------------------


def test_a_full_disk_writes_what_fits_then_raises_enospc() -> None:
    disk = fresh()
    disk.set_capacity(3000)
    disk.write_file(f"{ROOT}/old", b"x" * 1000)
    usage = disk.statvfs(ROOT)
    assert (usage.total, usage.free) == (3000, 2000)
    d = disk.open_dir(ROOT)
    f = disk.create_at(d, "new")
    assert disk.write(f, PAYLOAD + PAYLOAD) == 2000  # partial
    with pytest.raises(OSError) as info:
        disk.write(f, b"more")
    assert info.value.errno == errno.ENOSPC
    assert disk.statvfs(ROOT).free == 0
    disk.unlink_at(d, "old")  # space comes back
    assert disk.write(f, b"more") == 4
    disk.close(f)
    disk.close(d)
    disk.set_capacity(None)
    assert disk.statvfs(ROOT).total == 1 << 40


def test_a_root_may_be_a_device_of_its_own() -> None:
    disk = fresh()
    other = "/sim/second"
    disk.close(disk.make_dir(other, "", fsync=False)[0])
    disk.set_capacity(100, root=other)
    disk.write_file(f"{ROOT}/big", b"x" * 5000)
    assert disk.statvfs(other).free == 100
    d = disk.open_dir(other)
    f = disk.create_at(d, "f")
    assert disk.write(f, b"y" * 150) == 100
    disk.close(f)
    disk.close(d)
    assert disk.statvfs(ROOT).total == 1 << 40


def test_latency_sleeps_in_real_time_before_the_chosen_operation() -> None:
    disk = fresh()
    disk.write_file(f"{ROOT}/f", b"data")
    disk.set_latency(0.05, "read")
    f = disk.open_file(ROOT, "f")[0]
    start = time.monotonic()
    disk.read(f, 10)
    assert time.monotonic() - start >= 0.05
    disk.set_latency(0, "read")
    start = time.monotonic()
    disk.read(f, 10)
    disk.close(f)
    assert time.monotonic() - start < 0.05


def test_rot_damages_a_stored_file_silently() -> None:
    disk = fresh()
    disk.write_file(f"{ROOT}/ab/cd/blk", PAYLOAD, mtime_ns=42)
    offsets = disk.rot(f"{ROOT}/ab/cd/blk", 2)
    rotten = disk.read_file(f"{ROOT}/ab/cd/blk")
    assert len(rotten) == len(PAYLOAD)
    assert [i for i in range(len(PAYLOAD)) if rotten[i] != PAYLOAD[i]] == offsets
    assert disk.durable_file(f"{ROOT}/ab/cd/blk") == rotten  # at rest, not in a cache
    st = disk.lstat(ROOT, "ab/cd/blk")
    assert st is not None and st.st_mtime_ns == 42
