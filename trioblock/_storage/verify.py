"""Offline verification of a data directory (ours or a Garage node's: same format).

``verify_dir`` walks ``<dir>/<aa>/<bb>/`` in hash order and verifies every block file
(``<hex>`` plain, ``<hex>.zst`` one zstd frame) by hashing its plaintext, without a
node, a database or Trio: it is synchronous and meant for a CLI (or a thread). It only
reads; it never quarantines or changes anything.

Files that are not blocks — quarantined ``*.corrupted`` copies, temp files left by a
crash, block-named files in the wrong subdirectory, anything else in the two levels of
subdirectories — are listed as ``other_files``. Files at the top level (markers),
directories outside the ``aa/bb`` pattern and symbolic links are not looked at.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .._core.block import DEFAULT_MAX_BLOCK_SIZE, BlockDecoder, BlockHeader
from .._core.hashing import Hash
from ..errors import CorruptBlockError
from .blockfiles import BLOCK_NAME_RE, READ_CHUNK, _iter_files


@dataclass
class VerifyReport:
    """Result (or running tally, for a progress callback) of :func:`verify_dir`."""

    path: Path
    ok: int = 0
    bytes_checked: int = 0
    corrupt: list[Path] = field(default_factory=list)
    #: files that could not be read, with the error
    unreadable: list[tuple[Path, str]] = field(default_factory=list)
    other_files: list[Path] = field(default_factory=list)

    @property
    def blocks(self) -> int:
        """Block files looked at (valid, corrupt or unreadable)."""
        return self.ok + len(self.corrupt) + len(self.unreadable)

    @property
    def clean(self) -> bool:
        return not self.corrupt and not self.unreadable


#: ``progress(fraction, report)``: ``fraction`` estimates the part done (0..1, by
#: position in hash space); ``report`` is the tally so far.
ProgressCallback = Callable[[float, VerifyReport], None]


def _verify_file(path: Path, hash: Hash, header: BlockHeader, max_size: int) -> int:
    """Bytes read; raises ``CorruptBlockError`` or ``OSError``."""
    decoder = BlockDecoder(hash, header, max_size=max_size)
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(READ_CHUNK):
            size += len(chunk)
            decoder.feed(chunk)
    decoder.finish()
    return size


def verify_dir(
    path: Path | str,
    *,
    progress: ProgressCallback | None = None,
    max_block_size: int = DEFAULT_MAX_BLOCK_SIZE,
) -> VerifyReport:
    """Verify every block file under the data directory ``path``.

    ``max_block_size`` bounds the plaintext of one block (a larger one counts as
    corrupt). ``FileNotFoundError`` if ``path`` is not a directory.
    """
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a directory")
    report = VerifyReport(root)
    for file in _iter_files(root):
        m = BLOCK_NAME_RE.match(file.name)
        subdir = file.parent.parent.name + file.parent.name
        if m is None or not m.group(1).startswith(subdir):
            report.other_files.append(file)
        else:
            header = BlockHeader.COMPRESSED if m.group(2) else BlockHeader.PLAIN
            try:
                report.bytes_checked += _verify_file(
                    file, Hash(bytes.fromhex(m.group(1))), header, max_block_size
                )
            except CorruptBlockError:
                report.corrupt.append(file)
            except OSError as exc:
                report.unreadable.append((file, f"{type(exc).__name__}: {exc.strerror or exc}"))
            else:
                report.ok += 1
        if progress is not None:
            progress(int(subdir, 16) / 65536 if len(subdir) == 4 else 0.0, report)
    if progress is not None:
        progress(1.0, report)
    return report


__all__ = ["ProgressCallback", "VerifyReport", "verify_dir"]
