"""Renaming a copy aside and removing it, by name relative to its directory.

Rules kept here:

- Only a regular file is ever renamed or removed (``nofollow.regular_at``): anything
  else under a block's name is left alone and logged.
- A copy failing verification is renamed to ``<name>.corrupted``. Read-only file
  systems and permission errors are logged, not raised: the copy stays where it is.
- Deletion is two steps: :func:`detach` renames the copy to a temp name (it vanishes
  from lookups atomically) and :func:`unlink_copy` removes it later.
- With ``fsync``, the directory is fsynced after each change.
- With ``roots`` (the store's kept root descriptors), ``aa/bb`` is reached in one call.
"""

from __future__ import annotations

import errno
import logging
import os

from .nofollow import DataRoots, regular_at, rename_at
from .paths import quarantine_name, temp_suffix

log = logging.getLogger("trioblock.storage")


def quarantine_copy(path: str, *, fsync: bool, roots: DataRoots | None = None) -> str | None:
    """Rename the copy at ``path`` to its quarantine name; that path, or None when it is
    gone, not a regular file, or cannot be renamed (logged)."""
    with regular_at(path, roots) as found:
        if found is None:
            return None
        dir_fd, name = found
        target = quarantine_name(name)
        try:
            rename_at(dir_fd, name, target)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno not in (errno.EROFS, errno.EPERM, errno.EACCES):
                raise
            log.warning("%s is corrupt but cannot be quarantined: %s", path, exc)
            return None
        if fsync:
            os.fsync(dir_fd)
    return path[: -len(name)] + target


def detach(path: str, roots: DataRoots | None = None) -> str | None:
    """Rename the copy at ``path`` to a temp name (no fsync); that path, or None."""
    with regular_at(path, roots) as found:
        if found is None:
            return None
        dir_fd, name = found
        trash = name + temp_suffix()
        try:
            rename_at(dir_fd, name, trash)
        except FileNotFoundError:
            return None
    return path[: -len(name)] + trash


def unlink_copy(path: str, *, fsync: bool, roots: DataRoots | None = None) -> bool:
    """Remove the regular file at ``path``; False when it is gone or not a file."""
    with regular_at(path, roots) as found:
        if found is None:
            return False
        dir_fd, name = found
        try:
            os.unlink(name, dir_fd=dir_fd)
        except FileNotFoundError:
            return False
        if fsync:
            os.fsync(dir_fd)
    return True


__all__ = ["detach", "quarantine_copy", "unlink_copy"]
