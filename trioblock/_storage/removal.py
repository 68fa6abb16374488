"""Renaming a copy aside and removing it, by name relative to its directory.

Rules kept here:

- Only a regular file is ever renamed or removed (``fileops.regular_at``): anything
  else under a block's name is left alone and logged.
- A copy failing verification is renamed to ``<name>.corrupted``. Read-only file
  systems and permission errors are logged, not raised: the copy stays where it is.
- Deletion is two steps: :func:`detach` renames the copy to a temp name (it vanishes
  from lookups atomically) and :func:`unlink_copy` removes it later.
- With ``fsync``, the directory is fsynced after each change, and after an unlink that
  failed (the rename of :func:`detach` before it is then made durable).
- Every file operation goes through the node's ``Disk``.
"""

from __future__ import annotations

import contextlib
import errno
import logging

from .._core.disk import Disk
from .fileops import regular_at
from .paths import quarantine_name, temp_suffix

log = logging.getLogger("trioblock.storage")


def quarantine_copy(disk: Disk, path: str, *, fsync: bool) -> str | None:
    """Rename the copy at ``path`` to its quarantine name; that path, or None when it is
    gone, not a regular file, or cannot be renamed (logged)."""
    with regular_at(disk, path) as found:
        if found is None:
            return None
        dir, name = found
        target = quarantine_name(name)
        try:
            disk.rename_at(dir, name, target)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno not in (errno.EROFS, errno.EPERM, errno.EACCES):
                raise
            log.warning("%s is corrupt but cannot be quarantined: %s", path, exc)
            return None
        if fsync:
            disk.fsync(dir)
    return path[: -len(name)] + target


def detach(disk: Disk, path: str) -> str | None:
    """Rename the copy at ``path`` to a temp name (no fsync); that path, or None."""
    with regular_at(disk, path) as found:
        if found is None:
            return None
        dir, name = found
        trash = name + temp_suffix()
        try:
            disk.rename_at(dir, name, trash)
        except FileNotFoundError:
            return None
    return path[: -len(name)] + trash


def unlink_copy(disk: Disk, path: str, *, fsync: bool) -> bool:
    """Remove the regular file at ``path``; False when it is gone or not a file."""
    with regular_at(disk, path) as found:
        if found is None:
            return False
        dir, name = found
        try:
            disk.unlink_at(dir, name)
        except FileNotFoundError:
            return False
        except OSError:
            if fsync:
                # The copy stays under its temp name (the start-up sweep removes it):
                # make the rename that put it there durable, or a power loss could bring
                # it back under its block name once its row is gone.
                with contextlib.suppress(OSError):
                    disk.fsync(dir)
            raise
        if fsync:
            disk.fsync(dir)
    return True


__all__ = ["detach", "quarantine_copy", "unlink_copy"]
