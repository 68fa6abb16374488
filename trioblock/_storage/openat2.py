"""``openat2(2)``: a block file or an ``aa/bb`` directory reached from a data directory's
kept root descriptor in one call, no link followed on the way.

Each data directory's root is opened once (by path: the root is trusted) and its
descriptor kept while the disk lives (:class:`DataRoots`; reopened by path if the
directory was removed meanwhile); ``openat2`` with ``RESOLVE_NO_SYMLINKS|RESOLVE_BENEATH``
then refuses a link anywhere on the way, as the one-level-at-a-time walk of ``nofollow``
does. Nothing below a root is cached, so a directory renamed, removed or swapped for a
link is seen at once. Where ``openat2`` is missing (another OS, an old kernel, a sandbox
refusing it) or turned off (``DataRoots(openat2=False)``), :func:`open_below` returns
None and callers walk instead.

Everything here blocks: callers run it in a worker thread.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import sys
import threading
import time
import weakref
from contextlib import suppress

log = logging.getLogger("trioblock.storage")

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

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


def _openat2_broken() -> bool:
    """Whether ``openat2`` itself fails (EINVAL for a valid call: not supported)."""
    fn = _syscall
    if fn is None:
        return True
    ref, size = _how(DIR_FLAGS)
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

    def __init__(self, *, openat2: bool = True) -> None:
        #: False: never use ``openat2`` (callers walk one level at a time)
        self.openat2 = openat2
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


def open_root(root: str) -> int:
    """A descriptor of a data directory's root (followed: the root is trusted)."""
    return os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


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
    if _syscall is None or not roots.openat2:
        return None
    fd = _openat2_raw(roots.fd(root), rel, flags)
    if fd == -errno.ENOENT and roots.refresh(root):
        fd = _openat2_raw(roots.fd(root), rel, flags)
    return fd


__all__ = ["DIR_FLAGS", "REFRESH_EVERY", "DataRoots", "open_below", "open_below_raw", "open_root"]
