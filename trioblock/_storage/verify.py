"""Offline verification of a data directory (ours or a Garage node's: same format).

``verify_dir`` walks ``<dir>/<aa>/<bb>/`` in hash order (the walk of ``dirwalk``) and
verifies every block file (``<hex>`` plain, ``<hex>.zst`` one zstd frame) by hashing its
plaintext, without a node, a database or Trio: it is synchronous and meant for a CLI (or
a thread). It only reads; it never quarantines or changes anything, and it never follows
a link below ``path`` nor reads more of a file than a block of ``max_block_size`` can
take.

What it reports besides valid and corrupt blocks:

- ``unreadable``: block files that could not be read, with the error;
- ``unreadable_dirs``: directories that could not be listed (the walk goes on);
- ``not_regular``: what stands where a block file or an ``aa``/``bb`` directory should
  be but is not one — a FIFO, a device, a directory or a link named like a block, a link
  or a file named like a subdirectory. Such entries are never read, by this nor by a
  node; a node's scrub reports them too;
- ``other_files``: files that are not blocks — quarantined ``*.corrupted`` copies, temp
  files left by a crash (also ``trioblock-marker.tmp<8 hex>`` at the top), block-named
  files in the wrong subdirectory, directories with other names, anything else. The
  marker and ``lost+found`` at the top are expected and not listed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .._core.block import DEFAULT_MAX_BLOCK_SIZE
from .._core.disk import Disk
from ..errors import CorruptBlockError
from .dirwalk import EntryKind, walk_data_dir
from .paths import BlockLocation
from .reading import open_location, verify_open_copy
from .realdisk import RealDisk


@dataclass
class VerifyReport:
    """Result (or running tally, for a progress callback) of :func:`verify_dir`."""

    path: Path
    ok: int = 0
    bytes_checked: int = 0
    corrupt: list[Path] = field(default_factory=list)
    #: block files that could not be read, with the error
    unreadable: list[tuple[Path, str]] = field(default_factory=list)
    other_files: list[Path] = field(default_factory=list)
    #: directories that could not be listed, with the error
    unreadable_dirs: list[tuple[Path, str]] = field(default_factory=list)
    #: entries that are not what their name says, with what they are instead
    not_regular: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def blocks(self) -> int:
        """Block files looked at (valid, corrupt or unreadable)."""
        return self.ok + len(self.corrupt) + len(self.unreadable)

    @property
    def clean(self) -> bool:
        """Every block verified, every directory listed, nothing in a block's place."""
        return not (self.corrupt or self.unreadable or self.unreadable_dirs or self.not_regular)


#: ``progress(fraction, report)``: ``fraction`` estimates the part done (0..1, by
#: position in hash space); ``report`` is the tally so far.
ProgressCallback = Callable[[float, VerifyReport], None]


def _verify_file(disk: Disk, loc: BlockLocation, max_size: int) -> int:
    """Bytes read; raises ``CorruptBlockError`` or ``OSError``."""
    file, st = open_location(disk, loc)
    try:
        return verify_open_copy(disk, file, st.st_size, loc, max_size)
    finally:
        disk.close(file)


def _position(subdir: str) -> float:
    if len(subdir) == 4:
        return int(subdir, 16) / 65536
    if len(subdir) == 2:
        return int(subdir, 16) / 256
    return 0.0


def verify_dir(
    path: Path | str,
    *,
    progress: ProgressCallback | None = None,
    max_block_size: int = DEFAULT_MAX_BLOCK_SIZE,
    disk: Disk | None = None,
) -> VerifyReport:
    """Verify every block file under the data directory ``path``.

    ``max_block_size`` bounds the plaintext of one block (a larger one counts as
    corrupt). ``FileNotFoundError`` if ``path`` is not a directory. ``disk``: the disk
    holding it (None: the real one).
    """
    disk = RealDisk() if disk is None else disk
    root = Path(path)
    try:
        disk.close(disk.open_dir(str(root)))
    except (FileNotFoundError, NotADirectoryError):
        raise FileNotFoundError(f"{root} is not a directory") from None
    except OSError:
        pass  # there but unreadable: the walk reports it
    report = VerifyReport(root)
    fraction = 0.0
    for entry in walk_data_dir(disk, root, stat=False):
        where = Path(entry.path)
        if entry.kind is EntryKind.BLOCK:
            assert entry.loc is not None
            try:
                report.bytes_checked += _verify_file(disk, entry.loc, max_block_size)
            except CorruptBlockError:
                report.corrupt.append(where)
            except OSError as exc:
                report.unreadable.append((where, f"{type(exc).__name__}: {exc.strerror or exc}"))
            else:
                report.ok += 1
        elif entry.kind is EntryKind.UNREADABLE:
            report.unreadable_dirs.append((where, entry.error or "cannot be listed"))
        elif entry.kind in (EntryKind.NOT_A_FILE, EntryKind.NOT_A_DIR):
            report.not_regular.append((where, entry.error or entry.kind.value))
        else:
            report.other_files.append(where)
        if progress is not None:
            fraction = max(fraction, _position(entry.subdir))
            progress(fraction, report)
    if progress is not None:
        progress(1.0, report)
    return report


__all__ = ["ProgressCallback", "VerifyReport", "verify_dir"]
