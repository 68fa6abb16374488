"""The ``Disk`` contract (``trioblock._core.disk``), checked against the real disk on
``tmp_path`` and the ``SimulatedDisk`` alike: a node cannot tell them apart except by
the simulated disk's faults."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from trioblock._core.disk import Disk, NotABlockFile, NotASubdir
from trioblock._storage import RealDisk
from trioblock.testing import SimulatedDisk


class Bench:
    """A disk under test, its root, and how to plant things below the root (as an
    operator, or an attacker, would have before the node started)."""

    def __init__(self, disk: Disk, root: str) -> None:
        self.disk = disk
        self.root = root

    def plant(self, rel: str, data: bytes) -> None:
        if isinstance(self.disk, SimulatedDisk):
            self.disk.write_file(f"{self.root}/{rel}", data)
        else:
            path = Path(self.root, rel)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)

    def link(self, rel: str, target: str) -> None:
        if isinstance(self.disk, SimulatedDisk):
            self.disk.symlink(f"{self.root}/{rel}", target)
        else:
            Path(self.root, rel).parent.mkdir(parents=True, exist_ok=True)
            os.symlink(target, Path(self.root, rel))

    def fifo(self, rel: str) -> None:
        if isinstance(self.disk, SimulatedDisk):
            self.disk.mkfifo(f"{self.root}/{rel}")
        else:
            Path(self.root, rel).parent.mkdir(parents=True, exist_ok=True)
            os.mkfifo(Path(self.root, rel))

    def read(self, rel: str) -> bytes:
        file, st = self.disk.open_file(self.root, rel)
        try:
            assert stat.S_ISREG(st.st_mode)
            return self.disk.read(file, st.st_size + 1)
        finally:
            self.disk.close(file)


@pytest.fixture(params=["real", "simulated"])
def bench(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Bench]:
    root = str(tmp_path / "data")
    disk: Disk = RealDisk() if request.param == "real" else SimulatedDisk(seed=7)
    handle, made = disk.make_dir(root, "", fsync=False)
    assert made
    disk.close(handle)
    yield Bench(disk, root)


def test_make_dir_makes_each_level_once_and_open_dir_finds_it(bench: Bench) -> None:
    disk, root = bench.disk, bench.root
    handle, made = disk.make_dir(root, "ab/cd", fsync=True)
    disk.close(handle)
    assert made
    handle, made = disk.make_dir(root, "ab/cd", fsync=True)
    disk.close(handle)
    assert not made
    for rel in ("", "ab", "ab/cd"):
        disk.close(disk.open_dir(root, rel))
    handle, made = disk.make_dir(root, "", fsync=False)  # the root: there already
    disk.close(handle)
    assert not made
    with pytest.raises(FileNotFoundError):
        disk.open_dir(root, "ab/ef")
    with pytest.raises(FileNotFoundError):
        disk.open_dir(root + "-missing")


def test_a_link_or_a_file_on_the_way_is_refused_never_followed(bench: Bench) -> None:
    disk, root = bench.disk, bench.root
    disk.close(disk.make_dir(root, "ab/cd", fsync=False)[0])
    bench.link("ef", "ab")  # a link to a real directory of the same root
    bench.plant("01", b"a file")
    for rel in ("ef", "ef/cd", "01", "01/23"):
        with pytest.raises(NotASubdir):
            disk.open_dir(root, rel)
    with pytest.raises(NotASubdir):
        disk.make_dir(root, "ef", fsync=False)
    bench.plant("ab/cd/" + "x" * 8, b"block")
    for rel in ("ef/cd/" + "x" * 8, "01/cd/x"):
        with pytest.raises(FileNotFoundError):
            disk.open_file(root, rel)
        assert disk.lstat(root, rel) is None
    with pytest.raises(FileNotFoundError):
        disk.open_file(root, "ab/ef/x")
    assert disk.lstat(root, "ab/ef/x") is None


def test_only_a_regular_file_is_opened(bench: Bench) -> None:
    disk, root = bench.disk, bench.root
    bench.plant("ab/cd/file", b"content")
    bench.link("ab/cd/link", "file")
    bench.fifo("ab/cd/fifo")
    disk.close(disk.make_dir(root, "ab/cd/dir", fsync=False)[0])
    assert bench.read("ab/cd/file") == b"content"
    for name, kind in (("link", "symbolic link"), ("fifo", "FIFO"), ("dir", "directory")):
        with pytest.raises(NotABlockFile) as info:
            disk.open_file(root, f"ab/cd/{name}")
        assert info.value.kind == kind
        assert info.value.path == f"{root}/ab/cd/{name}"
        d = disk.open_dir(root, "ab/cd")
        try:
            with pytest.raises(NotABlockFile):
                disk.open_file_at(d, name, "shown")
        finally:
            disk.close(d)
    with pytest.raises(FileNotFoundError):
        disk.open_file(root, "ab/cd/absent")
    link = disk.lstat(root, "ab/cd/link")
    assert link is not None and stat.S_ISLNK(link.st_mode)
    fifo = disk.lstat(root, "ab/cd/fifo")
    assert fifo is not None and stat.S_ISFIFO(fifo.st_mode)


def test_create_write_read_through_handles(bench: Bench) -> None:
    disk, root = bench.disk, bench.root
    d = disk.make_dir(root, "ab/cd", fsync=True)[0]
    try:
        f = disk.create_at(d, "new.tmp")
        try:
            assert disk.write(f, b"hello ") == 6
            assert disk.write(f, memoryview(b"world")) == 5
            with pytest.raises(OSError) as info:
                disk.read(f, 10)  # opened for writing only
            assert info.value.errno == errno.EBADF
            disk.set_mtime(f, 1_500_000_000_000_000_000)
            disk.fsync(f)
        finally:
            disk.close(f)
        with pytest.raises(FileExistsError):
            disk.create_at(d, "new.tmp")
        st = disk.lstat_at(d, "new.tmp")
        assert st is not None and stat.S_ISREG(st.st_mode)
        assert (st.st_size, st.st_mtime_ns) == (11, 1_500_000_000_000_000_000)
        f, st = disk.open_file_at(d, "new.tmp", "shown")
        try:
            assert st.st_size == 11
            assert disk.read(f, 5) == b"hello"
            assert disk.read(f, 100) == b" world"
            assert disk.read(f, 100) == b""
            with pytest.raises(OSError) as info:
                disk.write(f, b"x")  # opened for reading only
            assert info.value.errno == errno.EBADF
        finally:
            disk.close(f)
        with pytest.raises(OSError) as info:
            disk.read(f, 1)  # closed
        assert info.value.errno == errno.EBADF
        disk.fsync(d)
    finally:
        disk.close(d)


def test_rename_unlink_and_times_act_on_names_in_a_directory(bench: Bench) -> None:
    disk, root = bench.disk, bench.root
    bench.plant("ab/cd/a", b"A")
    bench.plant("ab/cd/b", b"B")
    bench.link("ab/cd/l", "a")
    d = disk.open_dir(root, "ab/cd")
    try:
        disk.rename_at(d, "a", "b")  # replaces b
        assert disk.lstat_at(d, "a") is None
        assert bench.read("ab/cd/b") == b"A"
        with pytest.raises(FileNotFoundError):
            disk.rename_at(d, "a", "c")
        disk.rename_at(d, "l", "l2")  # the link itself
        l2 = disk.lstat_at(d, "l2")
        assert l2 is not None and stat.S_ISLNK(l2.st_mode)
        disk.set_mtime_at(d, "b", 1_234_000_000_000)
        st = disk.lstat(root, "ab/cd/b")
        assert st is not None and st.st_mtime_ns == 1_234_000_000_000
        disk.unlink_at(d, "l2")
        disk.unlink_at(d, "b")
        with pytest.raises(FileNotFoundError):
            disk.unlink_at(d, "b")
        assert disk.lstat(root, "ab/cd/b") is None
        assert disk.list_dir(d) == []
    finally:
        disk.close(d)
    a = disk.open_dir(root, "ab")
    try:
        with pytest.raises(IsADirectoryError):
            disk.unlink_at(a, "cd")
    finally:
        disk.close(a)


def test_list_dir_tells_kinds_without_following_links(bench: Bench) -> None:
    disk, root = bench.disk, bench.root
    bench.plant("ab/file", b"12345")
    bench.link("ab/link", "file")
    disk.close(disk.make_dir(root, "ab/cd", fsync=False)[0])
    d = disk.open_dir(root, "ab")
    try:
        entries = {e.name: e for e in disk.list_dir(d)}
        assert sorted(entries) == ["cd", "file", "link"]
        kinds = {
            n: (e.is_file(follow_symlinks=False), e.is_dir(follow_symlinks=False))
            for n, e in entries.items()
        }
        assert kinds == {"cd": (False, True), "file": (True, False), "link": (False, False)}
        assert entries["file"].stat(follow_symlinks=False).st_size == 5
        assert stat.S_ISLNK(entries["link"].stat(follow_symlinks=False).st_mode)
    finally:
        disk.close(d)
    f = disk.open_file(root, "ab/file")[0]
    try:
        with pytest.raises(NotADirectoryError):
            disk.list_dir(f)
    finally:
        disk.close(f)


def test_statvfs_reports_size_and_free_space(bench: Bench) -> None:
    usage = bench.disk.statvfs(bench.root)
    assert usage.total >= usage.free > 0
    with pytest.raises(FileNotFoundError):
        bench.disk.statvfs(bench.root + "-missing")


def test_a_missing_root_is_absent_and_a_file_is_no_root(bench: Bench) -> None:
    disk, missing = bench.disk, bench.root + "-missing"
    with pytest.raises(FileNotFoundError):
        disk.lstat(missing, "x")
    with pytest.raises(FileNotFoundError):
        disk.open_file(missing, "ab/cd/x")
    with pytest.raises(FileNotFoundError):
        disk.open_dir(missing, "ab")
    handle, made = disk.make_dir(missing, "ab", fsync=True)  # made with its root
    disk.close(handle)
    assert made
    disk.close(disk.open_dir(missing))
    bench.plant("file", b"")
    for call in (
        lambda: disk.open_dir(f"{bench.root}/file"),
        lambda: disk.make_dir(f"{bench.root}/file", "", fsync=False),
    ):
        with pytest.raises(NotADirectoryError):
            call()
