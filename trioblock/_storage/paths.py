"""Names in a data directory: where a block's copy lives and what other names mean.

Rules kept here (the on-disk format, compatible with Garage):

- A block lives at ``<dir>/<hex h[0]>/<hex h[1]>/<hex h>``, plus ``.zst`` when
  compressed. The two directory levels are lowercase hex pairs.
- ``<name>.tmp<8 hex>`` is a write or a deletion in progress (or a crash's leftover);
  ``<name>.corrupted`` a copy set aside because it failed verification, or something
  that was not a regular file found under a block's name.
- ``<dir>/trioblock-marker`` is the node's marker (the wrong-mount check), written
  through ``trioblock-marker.tmp<8 hex>``.

Paths are kept as plain strings where they are hot (building a ``Path`` costs more than
reading a 4 KiB block) and turned into ``Path`` only when asked for.
"""

from __future__ import annotations

import os
import random
import re
import secrets
from pathlib import Path

from .._core.block import BlockHeader
from .._core.hashing import Hash

TMP_SUFFIX_RE = re.compile(r"\.tmp[0-9a-f]{8}$")
BLOCK_NAME_RE = re.compile(r"^([0-9a-f]{64})(\.zst)?$")
SUBDIR_NAME_RE = re.compile(r"^[0-9a-f]{2}$")
MARKER_NAME = "trioblock-marker"
MARKER_TEMP_RE = re.compile(r"^trioblock-marker\.tmp[0-9a-f]{8}$")
QUARANTINE_SUFFIX = ".corrupted"
#: Left alone at the top of a data directory that is a mount point.
LOST_AND_FOUND = "lost+found"


def subdir_names(hash: bytes) -> tuple[str, str]:
    """The two directory levels of a block: ``("aa", "bb")``."""
    return f"{hash[0]:02x}", f"{hash[1]:02x}"


def block_name(hash: bytes, header: BlockHeader) -> str:
    """The file name of a copy in ``header``'s encoding."""
    return bytes(hash).hex() + header.suffix


def block_subdir(root: Path, hash: bytes) -> Path:
    aa, bb = subdir_names(hash)
    return root / aa / bb


def block_path(root: Path, hash: bytes, header: BlockHeader) -> Path:
    return block_subdir(root, hash) / block_name(hash, header)


class _TempNames:
    """8 random hex digits per temp name without a system call each: a generator seeded
    from the OS once per process (and again in a forked child, which would otherwise
    draw its parent's names). A name taken all the same is refused by ``O_EXCL``."""

    def __init__(self) -> None:
        self._rng = random.Random(secrets.randbits(64))

    def reseed(self) -> None:
        self._rng.seed(secrets.randbits(64))

    def draw(self) -> str:
        return f"{self._rng.getrandbits(32):08x}"


_TEMP_NAMES = _TempNames()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_TEMP_NAMES.reseed)


def temp_suffix() -> str:
    return f".tmp{_TEMP_NAMES.draw()}"


def temp_name(final: Path) -> Path:
    return final.with_name(final.name + temp_suffix())


def quarantine_name(name: str) -> str:
    return name + QUARANTINE_SUFFIX


def split_block_path(path: str) -> tuple[str, str, str, str]:
    """``(root, aa, bb, name)`` of a path built as ``root/aa/bb/name``.

    ``ValueError`` when the path has fewer components or its directory levels are not
    hex pairs: such a path can never name a block copy.
    """
    parts = path.rsplit("/", 3)
    if len(parts) != 4:
        raise ValueError(f"{path!r} is not <data dir>/<aa>/<bb>/<name>")
    root, aa, bb, name = parts
    if not (root and SUBDIR_NAME_RE.match(aa) and SUBDIR_NAME_RE.match(bb) and name):
        raise ValueError(f"{path!r} is not <data dir>/<aa>/<bb>/<name>")
    return root, aa, bb, name


def parse_block_name(name: str, aa: str, bb: str) -> tuple[Hash, BlockHeader] | None:
    """The block a file name in ``aa/bb`` holds a copy of, or None if it holds none."""
    m = BLOCK_NAME_RE.match(name)
    if m is None or not m.group(1).startswith(aa + bb):
        return None
    header = BlockHeader.COMPRESSED if m.group(2) else BlockHeader.PLAIN
    return Hash(bytes.fromhex(m.group(1))), header


class BlockLocation:
    """Where a copy of a block was found: path, encoding, size and mtime."""

    __slots__ = ("_path", "_path_str", "hash", "header", "mtime_ns", "size")

    def __init__(
        self, hash: Hash, path: Path | str, header: BlockHeader, size: int, mtime_ns: int
    ) -> None:
        self.hash = hash
        self._path_str = str(path)
        self._path: Path | None = path if isinstance(path, Path) else None
        self.header = header
        self.size = size
        self.mtime_ns = mtime_ns

    @property
    def path(self) -> Path:
        if self._path is None:
            self._path = Path(self._path_str)
        return self._path

    @property
    def path_str(self) -> str:
        return self._path_str

    @property
    def written_at_msec(self) -> int:
        return self.mtime_ns // 1_000_000

    def __repr__(self) -> str:
        return f"BlockLocation({self._path_str!r}, {self.header.value}, {self.size} B)"


__all__ = [
    "BLOCK_NAME_RE",
    "MARKER_NAME",
    "MARKER_TEMP_RE",
    "TMP_SUFFIX_RE",
    "BlockLocation",
    "block_name",
    "block_path",
    "block_subdir",
    "parse_block_name",
    "quarantine_name",
    "split_block_path",
    "subdir_names",
    "temp_name",
    "temp_suffix",
]
