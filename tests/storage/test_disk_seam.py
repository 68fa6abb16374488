"""Every block-file operation of a node goes through its ``Config.disk``: faults injected
there reach the node exactly as a real disk's would."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import pytest
from faulty_disk import FaultyDisk

from trioblock import blake2sum
from trioblock._storage.verify import verify_dir
from trioblock.errors import DiskError

DATA = b"the disk seam\n" * 400
H = blake2sum(DATA)


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


async def test_a_node_does_every_block_file_operation_through_its_disk(
    open_node: Any, data_dir: Path
) -> None:
    disk = FaultyDisk()
    async with open_node(disk=disk) as bm:
        assert await bm.put_block(DATA) == H
        assert await bm.get_block(H) == DATA
        (usage,) = await bm.data_dir_usage()
        assert usage.total is not None and usage.total > 0
    ops = set(disk.ops())
    # markers, a durable write, a read, the start-up sweep's walk, the free space
    assert {"create_at", "write", "fsync", "rename_at", "open_file", "read"} <= ops
    assert {"list_dir", "statvfs"} <= ops


@pytest.mark.parametrize("op", ["write", "fsync", "rename_at"])
@pytest.mark.parametrize("err", [errno.EIO, errno.ENOSPC])
async def test_a_failed_write_fails_the_put_and_leaves_no_temp_file(
    open_node: Any, data_dir: Path, op: str, err: int
) -> None:
    disk = FaultyDisk()
    async with open_node(disk=disk) as bm:
        before = files_under(data_dir)
        # Twice: the write done in the hashing thread, then the put's own write (a
        # failure of the first is not the put's: the usual path tries again).
        disk.fail(op, err, times=2)
        with pytest.raises(DiskError) as info:
            await bm.put_block(DATA)
        assert info.value.errno == err
        assert info.value.directory == str(data_dir)
        assert files_under(data_dir) == before  # neither a temp file nor the block
        assert await bm.put_block(DATA) == H  # the disk works again: so does the put
        assert await bm.get_block(H) == DATA


def test_verify_dir_reports_a_copy_the_disk_cannot_read(tmp_path: Path) -> None:
    root = tmp_path / "data"
    hx = H.hex()
    (root / hx[:2] / hx[2:4]).mkdir(parents=True)
    (root / hx[:2] / hx[2:4] / hx).write_bytes(DATA)
    assert verify_dir(root, disk=FaultyDisk()).ok == 1
    disk = FaultyDisk()
    disk.fail("read", errno.EIO)
    report = verify_dir(root, disk=disk)
    assert report.ok == 0
    assert [(p.name, "EIO" in why or "Input/output" in why) for p, why in report.unreadable] == [
        (hx, True)
    ]
