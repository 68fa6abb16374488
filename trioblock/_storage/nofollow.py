"""Acting on names inside a data directory without ever following a link out of it.

The trust boundary: a data directory's root is the operator's choice and may itself be a
symbolic link or a mount point, so it is opened by path. Below it nothing is trusted:

- directories below the root (``aa``, ``aa/bb``) are reached in one ``openat2`` from the
  root's kept descriptor where available (see ``openat2``), otherwise opened one level at
  a time with ``O_NOFOLLOW|O_DIRECTORY`` relative to the descriptor of their parent: a
  symbolic link (or a file) in their place is refused (:class:`NotASubdir`), never
  followed;
- a file is opened with ``O_NOFOLLOW|O_NONBLOCK|O_NOCTTY`` (a FIFO or a device cannot
  block the open or become a terminal) and ``fstat``-ed: only a regular file is a copy
  (:class:`NotABlockFile`);
- an ``lstat`` below the root is an ``O_PATH`` open of the name itself (a link is looked
  at, never followed).

These are the real disk's primitives (``realdisk``); everything here blocks.
"""

from __future__ import annotations

import errno
import os
import stat

from .._core.disk import NotABlockFile, NotASubdir
from .openat2 import DIR_FLAGS, DataRoots, open_below, open_below_raw, open_root

_FILE_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_NOCTTY | os.O_CLOEXEC
#: A descriptor naming a file (a link itself, with O_NOFOLLOW) without opening it.
_PATH_FLAGS = getattr(os, "O_PATH", 0) | os.O_NOFOLLOW | os.O_CLOEXEC
#: Errors of an open meaning "not a directory or a link on the way".
_NOT_A_DIR = (errno.ELOOP, errno.ENOTDIR)


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


def open_child_dir(parent_fd: int, name: str, shown: str) -> int:
    """``name`` under ``parent_fd`` as a directory, refusing a link or a file."""
    try:
        return os.open(name, DIR_FLAGS, dir_fd=parent_fd)
    except OSError as exc:
        if exc.errno in _NOT_A_DIR:
            raise NotASubdir(shown) from None
        raise


def open_dir(roots: DataRoots, root: str, rel: str = "") -> int:
    """A descriptor of the directory ``root/rel`` (``rel`` ``""``: the root itself).

    ``FileNotFoundError`` when absent, :class:`NotASubdir` when a link or a file stands
    on the way below the root.
    """
    if not rel:
        return open_root(root)
    try:
        fd = open_below(roots, root, rel, DIR_FLAGS)
    except OSError as exc:
        if exc.errno in _NOT_A_DIR:
            raise NotASubdir(_which_not_a_dir(roots, root, rel)) from None
        if exc.errno == errno.ENOENT:
            raise FileNotFoundError(errno.ENOENT, "no such directory", f"{root}/{rel}") from None
        raise
    if fd is not None:
        return fd
    return _walk(root, rel.split("/"))


def _walk(root: str, parts: list[str]) -> int:
    """``root/<parts>`` opened one level at a time, refusing links and files."""
    try:
        fd = open_root(root)
    except NotADirectoryError:
        raise FileNotFoundError(errno.ENOENT, "no such data directory", root) from None
    shown = root
    try:
        for part in parts:
            shown = f"{shown}/{part}"
            child = open_child_dir(fd, part, shown)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _which_not_a_dir(roots: DataRoots, root: str, rel: str) -> str:
    """Which level of ``root/rel`` is not a directory (for the message)."""
    parts = rel.split("/")
    for depth in range(1, len(parts)):
        try:
            st = os.stat("/".join(parts[:depth]), dir_fd=roots.fd(root), follow_symlinks=False)
        except OSError:
            break
        if not stat.S_ISDIR(st.st_mode):
            return f"{root}/{'/'.join(parts[:depth])}"
    return f"{root}/{rel}"


def make_dir(roots: DataRoots, root: str, rel: str, *, fsync: bool) -> tuple[int, bool]:
    """A descriptor of ``root/rel``, made with its missing parents below the root (each
    new entry fsynced into its parent with ``fsync``), and whether this call made the
    last level (then empty but for what another thread or process put there since)."""
    if not rel:
        try:
            os.makedirs(root)
        except FileExistsError:
            return open_root(root), False
        return open_root(root), True
    head, _, name = rel.rpartition("/")
    try:
        # Most parents exist: one openat2 instead of a failing mkdir and an open.
        parent = open_dir(roots, root, head) if head else _fresh_root(roots, root)
    except FileNotFoundError:
        parent = make_dir(roots, root, head, fsync=fsync)[0]
    try:
        return _make_child(parent, name, f"{root}/{rel}", fsync=fsync)
    finally:
        os.close(parent)


def _fresh_root(roots: DataRoots, root: str) -> int:
    """A new descriptor of ``root`` (the kept one, refreshed first if the directory was
    removed and made again meanwhile)."""
    rfd = roots.fd(root)
    if os.fstat(rfd).st_nlink == 0 and roots.refresh(root, force=True):
        rfd = roots.fd(root)
    return os.dup(rfd)


def _make_child(parent: int, name: str, shown: str, *, fsync: bool) -> tuple[int, bool]:
    """A descriptor of directory ``name`` under ``parent``, made if missing (the parent
    fsynced then, with ``fsync``), and whether this call made it."""
    try:
        os.mkdir(name, dir_fd=parent)
        created = True
    except FileExistsError:
        created = False
    fd = open_child_dir(parent, name, shown)
    if created and fsync:
        try:
            os.fsync(parent)
        except BaseException:
            os.close(fd)
            raise
    return fd, created


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
    """The ``fstat`` of an opened file; closed and :class:`NotABlockFile` unless it is a
    regular file."""
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotABlockFile(shown, describe_mode(st.st_mode))
    except BaseException:
        os.close(fd)
        raise
    return st


def open_file_below(roots: DataRoots, root: str, rel: str) -> tuple[int, os.stat_result]:
    """:func:`open_file` of ``root/rel``, reached without following any link: one
    ``openat2`` from the root's kept descriptor, or the walk where it is missing.

    ``FileNotFoundError`` when absent (or when a parent is missing, not a directory or
    a link); :class:`NotABlockFile` unless it is a regular file.
    """
    shown = f"{root}/{rel}"
    fd = open_below_raw(roots, root, rel, _FILE_FLAGS)
    if fd is not None and fd < 0:
        err = -fd
        if err == errno.ENOENT:
            raise FileNotFoundError(errno.ENOENT, "no such file", shown)
        if err not in (errno.ELOOP, errno.ENOTDIR, errno.ENXIO, errno.ENODEV, errno.EISDIR):
            raise OSError(err, os.strerror(err), shown)
        fd = None  # the walk tells which part is wrong
    elif fd is not None:
        return fd, _regular_or_close(fd, shown)
    head, _, name = rel.rpartition("/")
    try:
        dir_fd = _walk(root, head.split("/")) if head else open_root(root)
    except NotASubdir:
        raise FileNotFoundError(errno.ENOENT, "not in a data directory", shown) from None
    try:
        return open_file(dir_fd, name, shown)
    finally:
        os.close(dir_fd)


def lstat_below(roots: DataRoots, root: str, rel: str) -> os.stat_result | None:
    """``lstat`` of ``root/rel`` reached without following links; None when absent or
    when a parent is missing or not a directory."""
    fd = open_below_raw(roots, root, rel, _PATH_FLAGS)
    if fd is None or fd == -errno.ELOOP:
        # ELOOP: a link on the way (a link as the name itself is returned, O_PATH)
        return _lstat_walk(root, rel)
    if fd < 0:
        if fd in (-errno.ENOENT, -errno.ENOTDIR):
            return None
        raise OSError(-fd, os.strerror(-fd), f"{root}/{rel}")
    try:
        return os.fstat(fd)
    finally:
        os.close(fd)


def _lstat_walk(root: str, rel: str) -> os.stat_result | None:
    head, _, name = rel.rpartition("/")
    try:
        dir_fd = _walk(root, head.split("/")) if head else open_root(root)
    except (FileNotFoundError, NotASubdir):
        return None
    try:
        return lstat_at(dir_fd, name)
    finally:
        os.close(dir_fd)


def lstat_at(dir_fd: int, name: str) -> os.stat_result | None:
    """``lstat`` of ``name`` under ``dir_fd``, None when absent."""
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


__all__ = [
    "NotABlockFile",
    "NotASubdir",
    "describe_mode",
    "lstat_at",
    "lstat_below",
    "make_dir",
    "open_child_dir",
    "open_dir",
    "open_file",
    "open_file_below",
]
