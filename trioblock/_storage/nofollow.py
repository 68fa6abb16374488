"""Acting on names inside a data directory without ever following a link out of it.

The trust boundary: a data directory's root is the operator's choice and may itself be a
symbolic link or a mount point, so it is opened by path. Below it nothing is trusted:

- ``aa`` and ``aa/bb`` are opened one level at a time with ``O_NOFOLLOW|O_DIRECTORY``
  relative to the descriptor of their parent, so a symbolic link (or a file) in their
  place is refused, never followed;
- a block file is opened relative to its ``aa/bb`` descriptor with
  ``O_NOFOLLOW|O_NONBLOCK|O_NOCTTY`` (a FIFO or a device cannot block the open or become
  a terminal) and ``fstat``-ed: only a regular file is a copy (:class:`NotABlockFile`);
- renames, unlinks and ``utime`` act on names relative to the ``aa/bb`` descriptor, and
  neither a rename nor an unlink follows a link;
- a read never takes more than the caller's limit (:func:`read_bounded`).

Fewer system calls on the hot paths (:class:`DataRoots`): each data directory's root is
opened once and its descriptor kept while the store lives (reopened by path if the
directory was removed meanwhile), and on Linux a block file or an ``aa/bb`` directory
is reached from it in one ``openat2`` call with ``RESOLVE_NO_SYMLINKS|RESOLVE_BENEATH``:
the kernel refuses a link anywhere on the way, as the one-level-at-a-time walk does.
Nothing below a root is cached, so a directory renamed, removed or swapped for a link
is seen at once. Where ``openat2`` is missing (another OS, an old kernel, a sandbox
refusing it) the walk is used.

Everything here blocks: callers run it in a worker thread.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import stat
import sys
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from .paths import split_block_path

log = logging.getLogger("trioblock.storage")

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_NOCTTY | os.O_CLOEXEC
#: A descriptor naming a file (a link itself, with O_NOFOLLOW) without opening it.
_PATH_FLAGS = getattr(os, "O_PATH", 0) | os.O_NOFOLLOW | os.O_CLOEXEC
READ_CHUNK = 1 << 20


class NotABlockFile(OSError):
    """Something that is not a regular file (a FIFO, a link, a directory...) under a
    block's name: never read, never a copy."""

    def __init__(self, path: str, kind: str) -> None:
        super().__init__(errno.EINVAL, f"{path} is a {kind}, not a regular file")
        self.path = path
        self.kind = kind


class NotASubdir(OSError):
    """A symbolic link or a file where a data directory's ``aa`` or ``aa/bb`` should be."""

    def __init__(self, path: str) -> None:
        super().__init__(
            errno.ENOTDIR,
            f"{path} is not a directory (a link or another file): trioblock never "
            "follows links inside a data directory",
        )
        self.path = path


# -- openat2(2): one call from a root descriptor, no link followed on the way -----------------

_SYS_OPENAT2 = 437  # the same number on every Linux architecture
_RESOLVE = 0x02 | 0x04 | 0x08  # RESOLVE_NO_MAGICLINKS | RESOLVE_NO_SYMLINKS | RESOLVE_BENEATH


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def _load_syscall() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).syscall
    except (OSError, AttributeError):
        return None
    fn.restype = ctypes.c_long
    return fn


_syscall = _load_syscall()
#: flags -> (the struct, a reference to it, its size); built once per flags value
_HOWS: dict[int, tuple[_OpenHow, object, int]] = {}


def _how(flags: int) -> tuple[object, int]:
    found = _HOWS.get(flags)
    if found is None:
        how = _OpenHow(flags, 0, _RESOLVE)
        found = _HOWS[flags] = (how, ctypes.byref(how), ctypes.sizeof(how))
    return found[1], found[2]


def _openat2_raw(dir_fd: int, rel: str, flags: int) -> int | None:
    """``openat2(dir_fd, rel, flags)`` refusing links anywhere: the descriptor, or
    ``-errno`` (no exception: a miss is common), or None when unavailable."""
    global _syscall
    fn = _syscall
    if fn is None:
        return None
    ref, size = _how(flags)
    fd: int = fn(_SYS_OPENAT2, dir_fd, rel.encode(), ref, size)
    if fd >= 0:
        return fd
    err = ctypes.get_errno()
    unavailable = err in (errno.ENOSYS, errno.EPERM, errno.E2BIG)
    if unavailable or (err == errno.EINVAL and _openat2_broken()):
        _syscall = None
        log.debug("openat2 unavailable (%s): walking paths one level at a time", err)
        return None
    return -err


def _openat2(dir_fd: int, rel: str, flags: int) -> int | None:
    """:func:`_openat2_raw` raising ``OSError`` as ``os.open`` does (``ELOOP`` for a
    link on the way)."""
    fd = _openat2_raw(dir_fd, rel, flags)
    if fd is None or fd >= 0:
        return fd
    raise OSError(-fd, os.strerror(-fd), rel)


def _openat2_broken() -> bool:
    """Whether ``openat2`` itself fails (EINVAL for a valid call: not supported)."""
    fn = _syscall
    if fn is None:
        return True
    ref, size = _how(_DIR_FLAGS)
    fd = fn(_SYS_OPENAT2, -100, b".", ref, size)  # AT_FDCWD
    if fd >= 0:
        os.close(fd)
        return False
    return True


#: Seconds between two checks of a root's descriptor after a miss.
REFRESH_EVERY = 1.0


class DataRoots:
    """Descriptors of data directory roots, each opened once (by path: the root is
    trusted) and kept open while this object lives; thread-safe.

    A root whose directory was removed meanwhile (link count 0) is reopened by path
    (:meth:`refresh`). The descriptors are closed when this object is garbage
    collected — never while an operation using them can still run.
    """

    def __init__(self) -> None:
        self._fds: dict[str, int] = {}
        #: root -> monotonic time of its last check (a miss checks at most once a second)
        self._checked: dict[str, float] = {}
        self._lock = threading.Lock()
        self._finalizer = weakref.finalize(self, _close_all, self._fds)

    def fd(self, root: str) -> int:
        """The descriptor of ``root`` (``FileNotFoundError`` when it does not exist)."""
        fd = self._fds.get(root)
        if fd is not None:
            return fd
        with self._lock:
            fd = self._fds.get(root)
            if fd is None:
                fd = self._fds[root] = open_root(root)
            return fd

    def refresh(self, root: str, *, force: bool = False) -> bool:
        """After an ``ENOENT``: whether ``root``'s descriptor was of a removed directory
        and was replaced (so the operation is worth trying again). Looks at most once a
        second per root (a miss is the common case: a block not stored yet)."""
        now = time.monotonic()
        if not force and now - self._checked.get(root, -REFRESH_EVERY) < REFRESH_EVERY:
            return False
        self._checked[root] = now
        with self._lock:
            fd = self._fds.get(root)
            if fd is None:
                return False
            try:
                if os.fstat(fd).st_nlink > 0:
                    return False
            except OSError:
                pass
            del self._fds[root]
            os.close(fd)
            try:
                self._fds[root] = open_root(root)
            except OSError:
                return False
            return True


def _close_all(fds: dict[str, int]) -> None:
    for fd in fds.values():
        with suppress(OSError):
            os.close(fd)
    fds.clear()


def open_below(roots: DataRoots, root: str, rel: str, flags: int) -> int | None:
    """``root/rel`` opened with ``flags`` from the root's kept descriptor, no link
    followed on the way; None when ``openat2`` is unavailable (walk instead).

    ``FileNotFoundError``/``OSError`` as ``os.open``; ``ELOOP`` for a link on the way,
    ``ENOTDIR`` for a file where a directory should be.
    """
    fd = open_below_raw(roots, root, rel, flags)
    if fd is None or fd >= 0:
        return fd
    raise OSError(-fd, os.strerror(-fd), f"{root}/{rel}")


def open_below_raw(roots: DataRoots, root: str, rel: str, flags: int) -> int | None:
    """:func:`open_below` returning ``-errno`` instead of raising."""
    if _syscall is None:
        return None
    fd = _openat2_raw(roots.fd(root), rel, flags)
    if fd == -errno.ENOENT and roots.refresh(root):
        fd = _openat2_raw(roots.fd(root), rel, flags)
    return fd


def describe_mode(mode: int) -> str:
    """What kind of file ``mode`` is, in words."""
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISLNK(mode):
        return "symbolic link"
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return "regular file" if stat.S_ISREG(mode) else "special file"


def open_root(root: str) -> int:
    """A descriptor of a data directory's root (followed: the root is trusted)."""
    return os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def open_child_dir(parent_fd: int, name: str, shown: str) -> int:
    """``name`` under ``parent_fd`` as a directory, refusing a link or a file."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise NotASubdir(shown) from None
        raise


def open_subdir(root: str, aa: str, bb: str, roots: DataRoots | None = None) -> int:
    """A descriptor of ``root/aa/bb``; ``FileNotFoundError`` or :class:`NotASubdir`.

    With ``roots``, one ``openat2`` from the root's kept descriptor where available.
    """
    if roots is not None:
        try:
            fd = open_below(roots, root, f"{aa}/{bb}", _DIR_FLAGS)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise NotASubdir(_which_not_a_subdir(roots, root, aa, bb)) from None
            if exc.errno == errno.ENOENT:
                raise FileNotFoundError(
                    errno.ENOENT, "no such directory", f"{root}/{aa}/{bb}"
                ) from None
            raise
        if fd is not None:
            return fd
    try:
        afd = os.open(f"{root}/{aa}", _DIR_FLAGS)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            if os.path.isdir(root):
                raise NotASubdir(f"{root}/{aa}") from None
            raise FileNotFoundError(errno.ENOENT, "no such data directory", root) from None
        raise
    try:
        return open_child_dir(afd, bb, f"{root}/{aa}/{bb}")
    finally:
        os.close(afd)


def _which_not_a_subdir(roots: DataRoots, root: str, aa: str, bb: str) -> str:
    """Which of ``root/aa`` and ``root/aa/bb`` is not a directory (for the message)."""
    try:
        st = os.stat(aa, dir_fd=roots.fd(root), follow_symlinks=False)
    except OSError:
        return f"{root}/{aa}/{bb}"
    return f"{root}/{aa}" if not stat.S_ISDIR(st.st_mode) else f"{root}/{aa}/{bb}"


@contextmanager
def subdir(root: str, aa: str, bb: str, roots: DataRoots | None = None) -> Iterator[int]:
    """:func:`open_subdir`, closed on exit."""
    fd = open_subdir(root, aa, bb, roots)
    try:
        yield fd
    finally:
        os.close(fd)


def make_subdir(root: str, aa: str, bb: str, *, fsync: bool, roots: DataRoots | None = None) -> int:
    """A descriptor of ``root/aa/bb``, created if missing (new entries made durable)."""
    return make_subdir_created(root, aa, bb, fsync=fsync, roots=roots)[0]


def make_subdir_created(
    root: str, aa: str, bb: str, *, fsync: bool, roots: DataRoots | None = None
) -> tuple[int, bool]:
    """:func:`make_subdir`, and whether ``bb`` was created by this call (then empty but
    for what another thread or process put there since)."""
    afd = None
    if roots is not None:
        # Most ``aa`` exist: one openat2 instead of a failing mkdir and an open.
        try:
            afd = open_below(roots, root, aa, _DIR_FLAGS)
        except FileNotFoundError:
            afd = None
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise NotASubdir(f"{root}/{aa}") from None
            raise
    if afd is None:
        afd = _make_aa(root, aa, fsync=fsync, roots=roots)
    try:
        return _make_child(afd, bb, f"{root}/{aa}/{bb}", fsync=fsync)
    finally:
        os.close(afd)


def _make_aa(root: str, aa: str, *, fsync: bool, roots: DataRoots | None) -> int:
    """A descriptor of ``root/aa``, created if missing (and fsynced into the root)."""
    rfd = open_root(root) if roots is None else roots.fd(root)
    if roots is not None and os.fstat(rfd).st_nlink == 0 and roots.refresh(root, force=True):
        rfd = roots.fd(root)  # the root was removed and made again meanwhile
    try:
        return _make_child(rfd, aa, f"{root}/{aa}", fsync=fsync)[0]
    finally:
        if roots is None:
            os.close(rfd)


def _make_child(parent: int, name: str, shown: str, *, fsync: bool) -> tuple[int, bool]:
    """A descriptor of directory ``name`` under ``parent``, made if missing (the parent
    fsynced then, with ``fsync``), and whether this call made it."""
    created = _mkdir_at(parent, name)
    fd = open_child_dir(parent, name, shown)
    if created and fsync:
        try:
            os.fsync(parent)
        except BaseException:
            os.close(fd)
            raise
    return fd, created


def _mkdir_at(parent_fd: int, name: str) -> bool:
    try:
        os.mkdir(name, dir_fd=parent_fd)
    except FileExistsError:
        return False
    return True


def open_file(dir_fd: int, name: str, shown: str) -> tuple[int, os.stat_result]:
    """Open ``name`` under ``dir_fd`` for reading: ``(fd, fstat)``.

    ``FileNotFoundError`` when absent; :class:`NotABlockFile` unless it is a regular
    file (a FIFO does not block the open, a link is never followed).
    """
    try:
        fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise NotABlockFile(shown, "symbolic link") from None
        if exc.errno in (errno.ENXIO, errno.ENODEV, errno.EISDIR):
            raise NotABlockFile(shown, "special file") from None
        raise
    return fd, _regular_or_close(fd, shown)


def _regular_or_close(fd: int, shown: str) -> os.stat_result:
    """The ``fstat`` of an opened block file; closed and :class:`NotABlockFile` unless
    it is a regular file."""
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotABlockFile(shown, describe_mode(st.st_mode))
    except BaseException:
        os.close(fd)
        raise
    return st


def open_file_below(
    roots: DataRoots, root: str, aa: str, bb: str, name: str
) -> tuple[int, os.stat_result]:
    """:func:`open_file` of ``root/aa/bb/name``, reached without following any link:
    one ``openat2`` from the root's kept descriptor, or the walk where it is missing.

    ``FileNotFoundError`` when absent (or when ``aa``/``bb`` is missing, not a directory
    or a link); :class:`NotABlockFile` unless it is a regular file.
    """
    shown = f"{root}/{aa}/{bb}/{name}"
    fd = open_below_raw(roots, root, f"{aa}/{bb}/{name}", _FILE_FLAGS)
    if fd is not None and fd < 0:
        err = -fd
        if err == errno.ENOENT:
            raise FileNotFoundError(errno.ENOENT, "no such file", shown)
        if err not in (errno.ELOOP, errno.ENOTDIR, errno.ENXIO, errno.ENODEV, errno.EISDIR):
            raise OSError(err, os.strerror(err), shown)
        fd = None  # the walk tells which part is wrong
    else:
        if fd is not None:
            return fd, _regular_or_close(fd, shown)
    try:
        dir_fd = open_subdir(root, aa, bb, None)
    except NotASubdir:
        raise FileNotFoundError(errno.ENOENT, "not in a data directory", shown) from None
    try:
        return open_file(dir_fd, name, shown)
    finally:
        os.close(dir_fd)


def lstat_below(roots: DataRoots, root: str, aa: str, bb: str, name: str) -> os.stat_result | None:
    """``lstat`` of ``root/aa/bb/name`` reached without following links; None when
    absent or when ``aa``/``bb`` is missing or not a directory."""
    fd = open_below_raw(roots, root, f"{aa}/{bb}/{name}", _PATH_FLAGS)
    if fd is None or fd == -errno.ELOOP:
        # ELOOP: a link at aa or bb (a link as the name itself is returned, O_PATH)
        return _lstat_walk(root, aa, bb, name)
    if fd < 0:
        if fd in (-errno.ENOENT, -errno.ENOTDIR):
            return None
        raise OSError(-fd, os.strerror(-fd), f"{root}/{aa}/{bb}/{name}")
    try:
        return os.fstat(fd)
    finally:
        os.close(fd)


def _lstat_walk(root: str, aa: str, bb: str, name: str) -> os.stat_result | None:
    try:
        dir_fd = open_subdir(root, aa, bb, None)
    except (FileNotFoundError, NotASubdir):
        return None
    try:
        return lstat_at(dir_fd, name)
    finally:
        os.close(dir_fd)


def read_bounded(fd: int, size_hint: int, limit: int) -> bytes | None:
    """The whole file behind ``fd``, or None if it holds more than ``limit`` bytes.

    ``size_hint`` is its ``fstat`` size; the file may grow or shrink meanwhile, and
    never more than ``limit + 1`` bytes are read.
    """
    if size_hint > limit:
        return None
    data = os.read(fd, size_hint + 1)
    if len(data) <= size_hint:
        return data
    parts = [data]
    total = len(data)
    while total <= limit:
        chunk = os.read(fd, min(READ_CHUNK, limit + 1 - total))
        if not chunk:
            break
        parts.append(chunk)
        total += len(chunk)
    return None if total > limit else b"".join(parts)


def lstat_at(dir_fd: int, name: str) -> os.stat_result | None:
    """``lstat`` of ``name`` under ``dir_fd``, None when absent."""
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def rename_at(dir_fd: int, src: str, dst: str) -> None:
    os.rename(src, dst, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)


@contextmanager
def regular_at(path: str, roots: DataRoots | None = None) -> Iterator[tuple[int, str] | None]:
    """``(dir_fd, name)`` for a block path whose name is a regular file there, else None.

    None when the path cannot name a copy, when its ``aa/bb`` is missing or not a
    directory, or when its name is absent or not a regular file (logged).
    """
    try:
        root, aa, bb, name = split_block_path(path)
        dir_fd = open_subdir(root, aa, bb, roots)
    except (ValueError, FileNotFoundError, NotASubdir):
        yield None
        return
    try:
        st = lstat_at(dir_fd, name)
        if st is None:
            yield None
        elif not stat.S_ISREG(st.st_mode):
            log.warning("%s is a %s, not a block file: left alone", path, describe_mode(st.st_mode))
            yield None
        else:
            yield dir_fd, name
    finally:
        os.close(dir_fd)


def fsync_dir(path: str) -> None:
    """fsync a data directory's root (or any directory reached by a trusted path)."""
    fd = open_root(path)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


__all__ = [
    "READ_CHUNK",
    "DataRoots",
    "lstat_below",
    "open_below",
    "open_file_below",
    "NotABlockFile",
    "NotASubdir",
    "describe_mode",
    "fsync_dir",
    "lstat_at",
    "make_subdir",
    "make_subdir_created",
    "open_child_dir",
    "open_file",
    "open_root",
    "open_subdir",
    "read_bounded",
    "regular_at",
    "rename_at",
    "subdir",
]
