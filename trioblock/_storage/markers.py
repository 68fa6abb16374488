"""Data-directory markers: the check that a directory is the disk this node wrote to.

Rules kept here:

- Each writable data directory holds ``trioblock-marker``, one line
  ``<node id>:<16 hex>``, written once (temp file, rename, fsync of the directory). Its
  token is also stored in the node's database (``data_dir_markers``).
- A known directory whose marker is missing or different is most likely a wrong or
  missing mount, and writing to it would scatter blocks: that is a ``ConfigError``. So is
  a directory new to this node that holds another node's marker.
- Read-only directories are never created nor written: their marker is checked when
  known, adopted when present, and otherwise left absent.
- The marker is read without following a link and at most 4 KiB of it. A temp file
  left by a crash while the marker was first written (``trioblock-marker.tmp<8 hex>``)
  is removed (writable directories only).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import secrets
import stat

from .._core.datalayout import DataLayout
from .._core.disk import Disk, Handle, NotABlockFile
from ..errors import ConfigError
from .fileops import read_bounded, write_all
from .paths import MARKER_NAME, MARKER_TEMP_RE, temp_suffix

log = logging.getLogger("trioblock.storage")

MARKER_MAX = 4096


def _read_marker(disk: Disk, root_fd: Handle, shown: str) -> str | None:
    """The marker's token, None when absent."""
    try:
        fd, st = disk.open_file_at(root_fd, MARKER_NAME, shown)
    except FileNotFoundError:
        return None
    try:
        data = read_bounded(disk, fd, st.st_size, MARKER_MAX)
    finally:
        disk.close(fd)
    if data is None:
        raise OSError(errno.EFBIG, f"{shown} is larger than {MARKER_MAX} bytes")
    try:
        return data.decode().strip()
    except UnicodeDecodeError:
        raise OSError(errno.EINVAL, f"{shown} is not text") from None


def remove_marker_temps(disk: Disk, root_fd: Handle, shown: str) -> int:
    """Remove ``trioblock-marker.tmp<8 hex>`` regular files at the top; return the count."""
    removed = 0
    names = [e.name for e in disk.list_dir(root_fd) if MARKER_TEMP_RE.match(e.name)]
    for name in names:
        st = disk.lstat_at(root_fd, name)
        if st is None or not stat.S_ISREG(st.st_mode):
            continue
        with contextlib.suppress(FileNotFoundError):
            disk.unlink_at(root_fd, name)
            removed += 1
            log.info("removed %s/%s, left by a crash during the first start-up", shown, name)
    return removed


def _write_marker(disk: Disk, root_fd: Handle, token: str) -> None:
    tmp = MARKER_NAME + temp_suffix()
    fd = disk.create_at(root_fd, tmp)
    try:
        try:
            write_all(disk, fd, (token + "\n").encode())
            disk.fsync(fd)
        finally:
            disk.close(fd)
        disk.rename_at(root_fd, tmp, MARKER_NAME)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            disk.unlink_at(root_fd, tmp)
        raise


def prepare_dirs(
    disk: Disk, layout: DataLayout, known: dict[str, str], node_id: str
) -> dict[str, str]:
    """Create missing directories and check each one's marker (see module rules).

    ``known`` maps directory paths to the marker token this node wrote there before.
    Returns the (possibly extended) mapping to persist.
    """
    result = dict(known)
    for root in layout.dirs:
        shown = f"{root}/{MARKER_NAME}"
        expected = known.get(str(root))
        read_only = layout.is_read_only(root)
        try:
            root_fd: Handle | None
            if not read_only and expected is None:  # a known one must be there
                root_fd = disk.make_dir(str(root), "", fsync=False)[0]
            else:
                try:
                    root_fd = disk.open_dir(str(root))
                except (FileNotFoundError, NotADirectoryError):
                    root_fd = None
            if read_only and root_fd is None:
                raise ConfigError(
                    "data_dir", f"read-only directory {root} does not exist: is it mounted?"
                )
            if root_fd is None:
                _check(root, None, expected, node_id)
                continue
            try:
                found = _read_marker(disk, root_fd, shown)
                token = _check(root, found, expected, node_id)
                if not read_only:
                    remove_marker_temps(disk, root_fd, str(root))
                if token is None and not read_only:
                    token = f"{node_id}:{secrets.token_hex(8)}"
                    _write_marker(disk, root_fd, token)
                    # Always, whatever data_fsync says: the token is committed to the
                    # database at once, and a marker lost to a power cut would make the
                    # next start refuse the directory as another one.
                    disk.fsync(root_fd)
            finally:
                disk.close(root_fd)
        except NotABlockFile as exc:
            raise ConfigError("data_dir", f"{shown} is a {exc.kind}, not a marker file") from exc
        except OSError as exc:
            raise ConfigError("data_dir", f"{root}: {exc.strerror or exc}") from exc
        if token is not None:
            result[str(root)] = token
    return result


def _check(root: object, found: str | None, expected: str | None, node_id: str) -> str | None:
    """The token to keep for ``root`` (None: none yet); ``ConfigError`` on a mismatch."""
    if expected is not None:
        if found is None:
            raise ConfigError(
                "data_dir",
                f"{root} has no {MARKER_NAME} file although this node wrote blocks "
                "there: is the disk mounted?",
            )
        if found != expected:
            raise ConfigError(
                "data_dir",
                f"{root} belongs to another node or layout (marker {found!r}, "
                f"expected {expected!r}): wrong mount?",
            )
        return found
    if found is not None:
        owner = found.rpartition(":")[0]
        if owner and owner != node_id:
            raise ConfigError(
                "data_dir",
                f"{root} holds the marker of node {owner!r}, not {node_id!r}: wrong mount?",
            )
    return found


__all__ = ["MARKER_NAME", "prepare_dirs", "remove_marker_temps"]
