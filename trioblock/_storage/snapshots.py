"""Snapshots of the node's SQLite file, and restoring one in its place.

Rules kept here:

- A snapshot is a consistent copy of ``trioblock.sqlite`` taken while the node runs,
  with SQLite's online backup API (``sqlite3.Connection.backup``) from a connection of
  its own in a worker thread: the copy is one read transaction, so it is the database
  as of one commit, and the node's writer is never blocked (WAL).
- Snapshots live in ``<metadata_dir>/snapshots/``, named by the UTC time they were taken
  (``20261206T203000.123456Z.sqlite``), so that name order is age order. A snapshot is
  written to a ``.tmp`` name, checked (``PRAGMA quick_check``), fsynced, renamed into
  place and its directory fsynced: a name never holds a partial copy. Then all but the
  newest ``keep`` are removed.
- A restore happens with the node stopped (:func:`restore_snapshot_sync` refuses a
  database some process holds open): the current file, if any, and its ``-wal`` /
  ``-shm`` files are moved aside to ``trioblock.sqlite.damaged-<time>`` (nothing is
  deleted), and the snapshot is copied into place the same durable way.
- A damaged database is told apart from a busy or unreadable one by SQLite's error code
  (``SQLITE_CORRUPT``, ``SQLITE_NOTADB``): :func:`is_corrupt`.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from ..errors import DatabaseError, MetadataCorruptError

log = logging.getLogger("trioblock.storage")

#: The directory of snapshots under ``metadata_dir``.
SNAPSHOT_DIR = "snapshots"
SNAPSHOT_SUFFIX = ".sqlite"
_TMP_SUFFIX = ".tmp"
#: SQLite's primary result codes for a damaged file.
_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26


@dataclass(frozen=True)
class SnapshotInfo:
    """One snapshot of the metadata database: its file, size in bytes, and when it was
    taken (wall-clock msec, from its name)."""

    path: Path
    size: int
    taken_msec: int


@dataclass(frozen=True)
class RestoreResult:
    """What :func:`restore_snapshot_sync` did: the snapshot copied into place, and
    where the replaced files went (empty when there was no database)."""

    snapshot: Path
    database: Path
    moved_aside: list[Path]


def is_corrupt(exc: BaseException) -> bool:
    """Whether ``exc`` is SQLite saying the file is damaged or not a database."""
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB)
    text = str(exc)
    return "malformed" in text or "not a database" in text


def snapshot_dir(metadata_dir: Path) -> Path:
    return metadata_dir / SNAPSHOT_DIR


def _stamp(msec: int) -> str:
    when = datetime.datetime.fromtimestamp(msec / 1000, tz=datetime.UTC)
    return when.strftime("%Y%m%dT%H%M%S.%fZ")


def _parse_stamp(name: str) -> int | None:
    if not name.endswith(SNAPSHOT_SUFFIX):
        return None
    try:
        when = datetime.datetime.strptime(name[: -len(SNAPSHOT_SUFFIX)], "%Y%m%dT%H%M%S.%fZ")
    except ValueError:
        return None
    return int(when.replace(tzinfo=datetime.UTC).timestamp() * 1000)


def list_snapshots(metadata_dir: Path) -> list[SnapshotInfo]:
    """The snapshots of ``metadata_dir``, oldest first (blocking)."""
    directory = snapshot_dir(metadata_dir)
    out: list[SnapshotInfo] = []
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise DatabaseError(f"cannot list snapshots in {directory}: {exc}") from exc
    for name in names:
        taken = _parse_stamp(name)
        if taken is None:
            continue
        path = directory / name
        with contextlib.suppress(FileNotFoundError):
            out.append(SnapshotInfo(path, path.stat().st_size, taken))
    return out


def _fsync_path(path: Path, *, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_only_uri(path: Path) -> str:
    """A read-only SQLite URI for ``path`` (percent-encoded: any file name works)."""
    return path.absolute().as_uri() + "?mode=ro"


def _check_file(path: Path) -> None:
    """``PRAGMA quick_check`` of a database file; ``MetadataCorruptError`` if it fails."""
    try:
        conn = sqlite3.connect(_read_only_uri(path), uri=True)
        try:
            rows = conn.execute("PRAGMA quick_check").fetchall()
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise MetadataCorruptError(f"{path} is not a usable database: {exc}") from exc
    if rows != [("ok",)]:
        problems = "; ".join(str(r[0]) for r in rows[:3])
        raise MetadataCorruptError(f"{path} fails its integrity check: {problems}")


def _remove_stale_temps(directory: Path) -> None:
    """Left by a snapshot interrupted by a crash: ``.tmp`` files (and their journals)."""
    for name in os.listdir(directory):
        if _TMP_SUFFIX in name:
            with contextlib.suppress(FileNotFoundError):
                (directory / name).unlink()


def _unlink_with_journals(path: Path) -> bool:
    """Remove a snapshot and any ``-wal`` / ``-shm`` / ``-journal`` beside it."""
    for extra in ("-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            path.with_name(path.name + extra).unlink()
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def take_snapshot_sync(
    db_path: Path, metadata_dir: Path, keep: int, now_msec: int
) -> tuple[SnapshotInfo, list[Path]]:
    """Copy ``db_path`` consistently into the snapshot directory, keep the newest
    ``keep`` snapshots; the new snapshot and the removed ones (blocking)."""
    directory = snapshot_dir(metadata_dir)
    try:
        directory.mkdir(exist_ok=True)
        _remove_stale_temps(directory)
    except OSError as exc:
        raise DatabaseError(f"cannot create {directory}: {exc}") from exc
    final = directory / (_stamp(now_msec) + SNAPSHOT_SUFFIX)
    while final.exists():  # two snapshots in one microsecond of node time
        now_msec += 1
        final = directory / (_stamp(now_msec) + SNAPSHOT_SUFFIX)
    tmp = final.with_name(final.name + _TMP_SUFFIX)
    try:
        source = sqlite3.connect(_read_only_uri(db_path), uri=True)
        try:
            dest = sqlite3.connect(tmp)
            try:
                source.backup(dest)
                # A rollback-journal file: read alone (checked, listed, restored) it
                # needs no -wal or -shm beside it; the node turns WAL on when it opens.
                dest.execute("PRAGMA journal_mode = DELETE")
            finally:
                dest.close()
        finally:
            source.close()
        _check_file(tmp)
        _fsync_path(tmp)
        os.rename(tmp, final)
        _fsync_path(directory, directory=True)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, sqlite3.Error | OSError):
            raise DatabaseError(f"snapshot of {db_path} failed: {exc}") from exc
        raise
    # The snapshot is taken: a pruning failure is logged and the rest goes on.
    removed: list[Path] = []
    try:
        old_ones = list_snapshots(metadata_dir)[:-keep]
    except OSError as exc:
        log.warning("cannot list %s to remove old snapshots: %s", directory, exc)
        old_ones = []
    for old in old_ones:
        try:
            if _unlink_with_journals(old.path):
                removed.append(old.path)
        except OSError as exc:
            log.warning("cannot remove old metadata snapshot %s: %s", old.path, exc)
    return SnapshotInfo(final, final.stat().st_size, now_msec), removed


def _check_not_in_use(db_path: Path) -> None:
    """``DatabaseError`` when a process (a running node) holds ``db_path`` open."""
    try:
        conn = sqlite3.connect(db_path, isolation_level=None, timeout=0)
    except sqlite3.Error:
        return
    try:
        conn.execute("PRAGMA locking_mode = EXCLUSIVE")
        conn.execute("BEGIN EXCLUSIVE")
        conn.execute("ROLLBACK")
    except sqlite3.Error as exc:
        if is_corrupt(exc):
            return  # no node can have opened a file that is not a database
        raise DatabaseError(
            f"{db_path} is in use ({exc}): stop the node before restoring its database"
        ) from exc
    finally:
        conn.close()


def restore_snapshot_sync(
    db_path: Path, metadata_dir: Path, snapshot: Path | None, now_msec: int
) -> RestoreResult:
    """Put a snapshot (the newest when ``snapshot`` is None) in place of ``db_path``,
    moving the current files aside; the node must be stopped (blocking)."""
    if snapshot is None:
        snapshots = list_snapshots(metadata_dir)
        if not snapshots:
            raise DatabaseError(f"no snapshot in {snapshot_dir(metadata_dir)} to restore")
        snapshot = snapshots[-1].path
    if not snapshot.is_file():
        raise DatabaseError(f"no snapshot file {snapshot}")
    _check_file(snapshot)
    if db_path.exists():
        _check_not_in_use(db_path)
    suffix = f".damaged-{_stamp(now_msec)}"
    moved: list[tuple[Path, Path]] = []
    tmp = db_path.with_name(db_path.name + _TMP_SUFFIX)
    try:
        # The copy is complete and durable before anything is moved: a restore that
        # fails (a full disk, say) leaves the current files where they were.
        shutil.copyfile(snapshot, tmp)
        _fsync_path(tmp)
        for extra in ("", "-wal", "-shm"):
            current = db_path.with_name(db_path.name + extra)
            if current.exists():
                aside = current.with_name(current.name + suffix)
                os.rename(current, aside)
                moved.append((current, aside))
        os.rename(tmp, db_path)
        _fsync_path(db_path.parent, directory=True)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        stranded = []
        for current, aside in reversed(moved):
            try:
                os.rename(aside, current)
            except OSError:
                stranded.append(f"{current.name} is at {aside}: move it back")
        also = f" ({'; '.join(stranded)})" if stranded else ""
        raise DatabaseError(f"restoring {snapshot} to {db_path} failed: {exc}{also}") from exc
    return RestoreResult(snapshot, db_path, [aside for _current, aside in moved])


def corrupt_message(db_path: Path, cause: BaseException) -> str:
    """What to tell an operator whose node found its database damaged at start-up."""
    snapshots = list_snapshots(db_path.parent) if db_path.parent.is_dir() else []
    if snapshots:
        how = (
            f"restore the newest of its {len(snapshots)} snapshot(s) "
            f"({snapshots[-1].path.name}) with the node stopped: "
            "`trioblock meta restore --config NODE.toml`, then start the node"
        )
    else:
        how = (
            f"there is no snapshot in {snapshot_dir(db_path.parent)}: move {db_path.name} "
            "(and its -wal, -shm files) aside and start the node with an empty database"
        )
    return (
        f"metadata database {db_path} is damaged ({cause}); {how}. The node then catches "
        "up from its peers (references by anti-entropy, blocks by resync); see the "
        "operators guide, 'Metadata snapshots'"
    )


__all__ = [
    "SNAPSHOT_DIR",
    "RestoreResult",
    "SnapshotInfo",
    "corrupt_message",
    "is_corrupt",
    "list_snapshots",
    "restore_snapshot_sync",
    "snapshot_dir",
    "take_snapshot_sync",
]
