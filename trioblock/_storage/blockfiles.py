"""Block files in data directories.

Rules kept here (DESIGN §2, on-disk compatible with Garage):

- A block lives at ``<dir>/<hex h[0]>/<hex h[1]>/<hex h>``, plus ``.zst`` when compressed.
- Lookup order: with compression on, ``.zst`` before plain; with it off, plain before
  ``.zst``; the primary directory of the block's partition before its secondaries.
- A write goes to ``<final>.tmp<8 hex>`` in the final directory: write, set mtime,
  fsync, rename, fsync the directory (the fsyncs only with ``data_fsync``). A failure or
  cancellation at any point removes the temp file; nothing is ever visible under a final
  name before it is complete.
- An existing copy is kept (after verifying it: a corrupt one is quarantined and
  replaced), except that a compressed copy replaces a plain one. Keeping a copy still
  refreshes its mtime: the mtime is the "last written" time that protects a
  freshly put block from garbage collection (see ``_core/resync.py``).
- A copy failing verification is renamed to ``<name>.corrupted`` (or ``.zst.corrupted``).
- Deletion first renames the copy to a temp name (so it vanishes atomically from lookups)
  and then unlinks it; temp names left by a crash are removed at start-up.
- Read-only data directories (``layout.read_only``) are read and never modified: no
  marker written, no temp cleanup, no mtime refresh, quarantine or deletion there. A
  write of a block whose only copy is read-only writes a fresh copy to the primary.

Every ``*_sync`` method blocks and runs in a worker thread through ``run_blocking``;
async methods take the block's mutation lock where they mutate, and ``*_locked``
variants exist for callers that already hold it.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import logging
import os
import re
import secrets
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import BinaryIO

import trio

from .._core.block import BlockDecoder, BlockHeader, DataBlock, decode_block
from .._core.datalayout import DataLayout
from .._core.hashing import Hash
from ..errors import ConfigError, CorruptBlockError
from .locks import KeyedLock
from .offload import run_blocking

log = logging.getLogger("trioblock.storage")

TMP_SUFFIX_RE = re.compile(r"\.tmp[0-9a-f]{8}$")
BLOCK_NAME_RE = re.compile(r"^([0-9a-f]{64})(\.zst)?$")
MARKER_NAME = "trioblock-marker"
READ_CHUNK = 1 << 20
#: Largest file verified in one read (bigger ones stream in READ_CHUNK pieces).
WHOLE_FILE_VERIFY = 8 << 20


class WriteOutcome(enum.Enum):
    WRITTEN = "written"
    KEPT = "kept"
    REPLACED = "replaced"


class BlockLocation:
    """Where a copy of a block was found: path, encoding, size and mtime.

    The path is kept as the string the lookup built and turned into a ``Path`` only
    when asked for (pathlib costs more than reading a 4 KiB block).
    """

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


def block_subdir(root: Path, hash: bytes) -> Path:
    return root / f"{hash[0]:02x}" / f"{hash[1]:02x}"


def block_path(root: Path, hash: bytes, header: BlockHeader) -> Path:
    return block_subdir(root, hash) / (bytes(hash).hex() + header.suffix)


def _open_for_reading(path: Path) -> BinaryIO:
    return open(path, "rb")


def _read_fd(fd: int, size_hint: int) -> bytes:
    """The whole file behind ``fd`` (which may have grown since its fstat)."""
    data = os.read(fd, size_hint + 1)
    if len(data) <= size_hint:
        return data
    parts = [data]
    while chunk := os.read(fd, READ_CHUNK):
        parts.append(chunk)
    return b"".join(parts)


def _fsync_dir(path: Path | str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def temp_name(final: Path) -> Path:
    return final.with_name(f"{final.name}.tmp{secrets.token_hex(4)}")


class FileChunks:
    """Async iterator over an open file's chunks (a class, not an async generator, so that
    nothing is left to the garbage collector when the consumer stops early)."""

    def __init__(self, f: BinaryIO, limiter: trio.CapacityLimiter) -> None:
        self._f = f
        self._limiter = limiter

    def __aiter__(self) -> FileChunks:
        return self

    async def __anext__(self) -> bytes:
        chunk = await run_blocking(self._f.read, READ_CHUNK, limiter=self._limiter)
        if not chunk:
            raise StopAsyncIteration
        return chunk


class BlockStore:
    """The block files of one node, over one or several data directories."""

    def __init__(
        self,
        layout: DataLayout,
        *,
        compression: bool,
        fsync: bool,
        limiter: trio.CapacityLimiter,
        max_block_size: int,
    ) -> None:
        self.layout = layout
        self.compression = compression
        self.fsync = fsync
        self.limiter = limiter
        self.max_block_size = max_block_size
        self.locks = KeyedLock()
        #: ``aa/bb`` directories known to exist (bounded: 65,536 per data directory)
        self._known_dirs: set[str] = set()
        self._order = (
            (BlockHeader.COMPRESSED, BlockHeader.PLAIN)
            if compression
            else (BlockHeader.PLAIN, BlockHeader.COMPRESSED)
        )

    # -- directories and markers --------------------------------------------------------

    def prepare_dirs_sync(self, known: dict[str, str], node_id: str) -> dict[str, str]:
        """Create missing directories and check each one's marker file.

        ``known`` maps directory paths to the marker token this node wrote there before.
        A known directory whose marker is missing or different is most likely a wrong or
        missing mount, and writing to it would scatter blocks: that is a ``ConfigError``.
        So is a directory new to this node that holds another node's marker. Read-only
        directories are never created nor written: their marker is checked when known,
        adopted when present, and otherwise left absent.
        Returns the (possibly extended) mapping to persist.
        """
        result = dict(known)
        for root in self.layout.dirs:
            marker = root / MARKER_NAME
            expected = known.get(str(root))
            read_only = self.layout.is_read_only(root)
            if expected is not None:
                try:
                    found = marker.read_text().strip()
                except FileNotFoundError:
                    raise ConfigError(
                        "data_dir",
                        f"{root} has no {MARKER_NAME} file although this node wrote blocks "
                        "there: is the disk mounted?",
                    ) from None
                except OSError as exc:
                    raise ConfigError("data_dir", f"{root}: cannot read marker: {exc}") from exc
                if found != expected:
                    raise ConfigError(
                        "data_dir",
                        f"{root} belongs to another node or layout (marker {found!r}, "
                        f"expected {expected!r}): wrong mount?",
                    )
                continue
            try:
                if read_only and not root.is_dir():
                    raise ConfigError(
                        "data_dir", f"read-only directory {root} does not exist: is it mounted?"
                    )
                if not read_only:
                    root.mkdir(parents=True, exist_ok=True)
                if marker.exists():
                    token = marker.read_text().strip()
                    owner = token.rpartition(":")[0]
                    if owner and owner != node_id:
                        raise ConfigError(
                            "data_dir",
                            f"{root} holds the marker of node {owner!r}, not {node_id!r}: "
                            "wrong mount?",
                        )
                elif read_only:
                    continue
                else:
                    token = f"{node_id}:{secrets.token_hex(8)}"
                    tmp = temp_name(marker)
                    tmp.write_text(token + "\n")
                    os.replace(tmp, marker)
                    if self.fsync:
                        _fsync_dir(root)
            except OSError as exc:
                raise ConfigError("data_dir", f"{root}: {exc.strerror or exc}") from exc
            result[str(root)] = token
        return result

    def in_read_only_dir(self, path: Path) -> bool:
        """Whether a block file's path lies in a read-only data directory."""
        parents = path.parents
        return len(parents) > 2 and self.layout.is_read_only(parents[2])

    # -- lookups ------------------------------------------------------------------------

    def _candidates(self, hash: Hash) -> Iterator[tuple[str, BlockHeader]]:
        """Every path a copy may have, in lookup order (plain strings: this is hot)."""
        name = f"/{hash[0]:02x}/{hash[1]:02x}/{hash.hex()}"
        for root in self.layout.candidate_roots(hash):
            for header in self._order:
                yield root + name + header.suffix, header

    def find_sync(self, hash: Hash) -> BlockLocation | None:
        """The first readable copy of ``hash`` in lookup order, or None."""
        for path, header in self._candidates(hash):
            try:
                st = os.stat(path)
            except (FileNotFoundError, NotADirectoryError):
                continue
            return BlockLocation(hash, path, header, st.st_size, st.st_mtime_ns)
        return None

    async def find(self, hash: Hash) -> BlockLocation | None:
        return await run_blocking(self.find_sync, hash, limiter=self.limiter)

    async def exists(self, hash: Hash) -> bool:
        return await self.find(hash) is not None

    # -- reading ------------------------------------------------------------------------

    def read_raw_sync(self, hash: Hash) -> tuple[DataBlock, BlockLocation] | None:
        """The encoded bytes of the first copy, unverified, or None when there is none."""
        # Open each candidate directly (no stat first): one failed open per absent name.
        for path, header in self._candidates(hash):
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except (FileNotFoundError, NotADirectoryError):
                continue
            try:
                st = os.fstat(fd)
                payload = _read_fd(fd, st.st_size)
            finally:
                os.close(fd)
            loc = BlockLocation(hash, path, header, st.st_size, st.st_mtime_ns)
            return DataBlock(header, payload), loc
        return None

    def read_verified_sync(self, hash: Hash) -> tuple[bytes, DataBlock, BlockLocation] | None:
        """Read and verify the first copy: (plaintext, encoded, where) or None if absent.

        Raises ``CorruptBlockError`` (with a ``location`` attribute) when the copy fails.
        """
        found = self.read_raw_sync(hash)
        if found is None:
            return None
        block, loc = found
        try:
            plaintext = decode_block(hash, block, max_size=self.max_block_size)
        except CorruptBlockError as exc:
            exc.location = loc  # type: ignore[attr-defined]
            raise
        return plaintext, block, loc

    def verify_file_sync(self, loc: BlockLocation) -> bool:
        """Whether the file at ``loc`` is a valid copy (False when it is gone).

        Files up to ``WHOLE_FILE_VERIFY`` bytes are read and decoded in one pass; larger
        ones stream through a :class:`BlockDecoder` in bounded memory.
        """
        try:
            fd = os.open(loc.path_str, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        try:
            size = os.fstat(fd).st_size
            try:
                if size <= WHOLE_FILE_VERIFY:
                    payload = _read_fd(fd, size)
                    decode_block(
                        loc.hash, DataBlock(loc.header, payload), max_size=self.max_block_size
                    )
                    return True
                decoder = BlockDecoder(loc.hash, loc.header, max_size=self.max_block_size)
                while chunk := os.read(fd, READ_CHUNK):
                    decoder.feed(chunk)
                decoder.finish()
            except CorruptBlockError:
                return False
        finally:
            os.close(fd)
        return True

    def verify_files_sync(self, locs: list[BlockLocation]) -> list[bool | OSError]:
        """:meth:`verify_file_sync` for a batch (one thread trip); OSErrors are returned."""
        results: list[bool | OSError] = []
        for loc in locs:
            try:
                results.append(self.verify_file_sync(loc))
            except OSError as exc:
                results.append(exc)
        return results

    async def read_verified(self, hash: Hash) -> tuple[bytes, DataBlock, BlockLocation] | None:
        """Verified plaintext of the local copy; quarantines it and raises if corrupt."""
        try:
            return await run_blocking(self.read_verified_sync, hash, limiter=self.limiter)
        except CorruptBlockError as exc:
            loc: BlockLocation | None = getattr(exc, "location", None)
            if loc is not None:
                await self.quarantine(loc)
            raise

    @asynccontextmanager
    async def open_stream(self, loc: BlockLocation) -> AsyncIterator[FileChunks]:
        """The encoded file at ``loc`` as chunks read in worker threads; closed on exit."""
        f = await run_blocking(_open_for_reading, loc.path, limiter=self.limiter)
        try:
            yield FileChunks(f, self.limiter)
        finally:
            with trio.CancelScope(shield=True):
                await run_blocking(f.close, limiter=self.limiter)

    # -- writing ------------------------------------------------------------------------

    def _make_subdir(self, root: str, hash: bytes) -> str:
        """``root/aa/bb``, created (and made durable) if needed; remembered once seen."""
        subdir = f"{root}/{hash[0]:02x}/{hash[1]:02x}"
        if subdir in self._known_dirs:
            return subdir
        created: list[str] = []
        for d in (subdir[:-3], subdir):
            try:
                os.mkdir(d)
                created.append(d)
            except FileExistsError:
                pass
        if self.fsync:
            # Make the new directory entries themselves durable.
            for d in created:
                _fsync_dir(os.path.dirname(d))
        self._known_dirs.add(subdir)
        return subdir

    def _new_file_sync(self, root: Path, hash: Hash, block: DataBlock, mtime_ns: int) -> str:
        """Write ``block`` under ``root`` via a temp file and rename; return the final path.

        The file is fsynced (with ``data_fsync``) but not its directory: the caller does
        that once it has finished changing the directory.
        """
        root_name = str(root)
        subdir = self._make_subdir(root_name, hash)
        final = f"{subdir}/{hash.hex()}{block.header.suffix}"
        tmp = f"{final}.tmp{secrets.token_hex(4)}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        try:
            fd = os.open(tmp, flags, 0o644)
        except FileNotFoundError:
            # A remembered directory was removed behind our back: create it again.
            self._known_dirs.discard(subdir)
            subdir = self._make_subdir(root_name, hash)
            fd = os.open(tmp, flags, 0o644)
        try:
            try:
                _write_all(fd, block.payload)
                os.utime(fd, ns=(mtime_ns, mtime_ns))
                if self.fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, final)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return final

    def write_in_dir_sync(self, root: Path, hash: Hash, block: DataBlock, mtime_ns: int) -> Path:
        """Durably write ``block`` under ``root`` whatever exists elsewhere (rebalance).

        The caller holds the block's lock and has verified ``block``.
        """
        if self.layout.is_read_only(root):
            raise ValueError(f"{root} is a read-only data directory")
        final = self._new_file_sync(root, hash, block, mtime_ns)
        if self.fsync:
            _fsync_dir(os.path.dirname(final))
        return Path(final)

    def write_sync(self, hash: Hash, block: DataBlock, written_at_msec: int) -> WriteOutcome:
        """Durably store ``block`` unless an equal or better copy exists (see module rules).

        A copy in a read-only directory does not count: its mtime cannot be refreshed,
        so the block is written to its primary directory as if it were absent.
        The caller holds the block's lock and has verified ``block``.
        """
        mtime_ns = written_at_msec * 1_000_000
        existing = self.find_sync(hash)
        if existing is not None and self.in_read_only_dir(existing.path):
            existing = None
        stale: Path | None = None
        if existing is not None and not self.verify_file_sync(existing):
            # A put is a chance to heal: a corrupt copy is quarantined, not kept.
            self.quarantine_sync(existing)
            existing = None
        if existing is not None:
            if existing.header is BlockHeader.COMPRESSED or not block.compressed:
                if mtime_ns > existing.mtime_ns:
                    try:
                        os.utime(existing.path, ns=(mtime_ns, mtime_ns))
                    except FileNotFoundError:
                        pass
                    except OSError as exc:
                        if exc.errno not in (errno.EROFS, errno.EPERM, errno.EACCES):
                            raise
                return WriteOutcome.KEPT
            stale = existing.path
        root = self.layout.primary_dir(hash)
        final = self._new_file_sync(root, hash, block, mtime_ns)
        subdir = os.path.dirname(final)
        if stale is not None and str(stale) != final:
            try:
                os.unlink(stale)
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("could not remove plain copy %s after compressing: %s", stale, exc)
        if self.fsync:
            _fsync_dir(subdir)
            if stale is not None and str(stale.parent) != subdir:
                _fsync_dir(stale.parent)
        return WriteOutcome.REPLACED if stale is not None else WriteOutcome.WRITTEN

    async def write_block_locked(
        self, hash: Hash, block: DataBlock, written_at_msec: int
    ) -> WriteOutcome:
        return await run_blocking(
            self.write_sync, hash, block, written_at_msec, limiter=self.limiter
        )

    async def write_block(self, hash: Hash, block: DataBlock, written_at_msec: int) -> WriteOutcome:
        async with self.locks.hold(hash):
            return await self.write_block_locked(hash, block, written_at_msec)

    # -- quarantine and deletion -----------------------------------------------------------

    def quarantine_sync(self, loc: BlockLocation) -> Path | None:
        """Rename a copy that still fails verification to ``*.corrupted``.

        Never in a read-only directory (None then, as when the copy is valid or gone).
        """
        if self.in_read_only_dir(loc.path):
            log.warning("block %s is corrupt in read-only %s: left there", loc.hash.hex(), loc.path)
            return None
        if self.verify_file_sync(loc):
            return None
        target = loc.path.with_name(loc.path.name + ".corrupted")
        try:
            os.replace(loc.path, target)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno not in (errno.EROFS, errno.EPERM, errno.EACCES):
                raise
            log.warning("block %s is corrupt but cannot be quarantined: %s", loc.hash.hex(), exc)
            return None
        if self.fsync:
            _fsync_dir(loc.path.parent)
        log.warning("block %s is corrupt: moved to %s", loc.hash.hex(), target)
        return target

    async def quarantine_locked(self, loc: BlockLocation) -> Path | None:
        return await run_blocking(self.quarantine_sync, loc, limiter=self.limiter)

    async def quarantine(self, loc: BlockLocation) -> Path | None:
        async with self.locks.hold(loc.hash):
            return await self.quarantine_locked(loc)

    def detach_now(self, loc: BlockLocation) -> Path | None:
        """Rename a copy to a temp name, *on the calling thread*; None if it is gone.

        This is the only filesystem call trioblock makes on the Trio thread, on purpose:
        the node checks the reference count and detaches the file in one uninterrupted
        step, so that a synchronous ``incref`` can never slip in between (a single
        rename of a file in a cached directory takes microseconds).
        A copy in a read-only directory is never touched (None, as if gone).
        """
        if self.in_read_only_dir(loc.path):
            return None
        trash = temp_name(loc.path)
        try:
            os.rename(loc.path, trash)
        except FileNotFoundError:
            return None
        return trash

    def discard_sync(self, trash: Path) -> None:
        try:
            os.unlink(trash)
        except FileNotFoundError:
            return
        if self.fsync:
            _fsync_dir(trash.parent)

    async def discard(self, trash: Path) -> None:
        await run_blocking(self.discard_sync, trash, limiter=self.limiter)

    async def delete_locked(self, loc: BlockLocation) -> bool:
        trash = self.detach_now(loc)
        if trash is None:
            return False
        await self.discard(trash)
        return True

    # -- maintenance ----------------------------------------------------------------------

    def cleanup_temps_sync(self) -> int:
        """Remove temp files left by a crash in every data directory; return the count."""
        removed = 0
        for root in self.layout.dirs:
            if self.layout.is_read_only(root):
                continue
            for path in _iter_files(root):
                if TMP_SUFFIX_RE.search(path.name):
                    try:
                        os.unlink(path)
                        removed += 1
                    except FileNotFoundError:
                        pass
                    except OSError as exc:
                        if exc.errno != errno.EROFS:
                            log.warning("could not remove stale temp file %s: %s", path, exc)
        return removed


def _iter_files(root: Path) -> Iterator[Path]:
    try:
        level1 = sorted(os.scandir(root), key=lambda e: e.name)
    except FileNotFoundError:
        return
    for d1 in level1:
        if len(d1.name) != 2 or not d1.is_dir(follow_symlinks=False):
            continue
        try:
            level2 = sorted(os.scandir(d1.path), key=lambda e: e.name)
        except FileNotFoundError:
            continue
        for d2 in level2:
            if len(d2.name) != 2 or not d2.is_dir(follow_symlinks=False):
                continue
            try:
                entries = sorted(os.scandir(d2.path), key=lambda e: e.name)
            except FileNotFoundError:
                continue
            for entry in entries:
                if entry.is_file(follow_symlinks=False):
                    yield Path(entry.path)


def iter_block_files(
    root: Path, start_after: str = "", *, stat: bool = True
) -> Iterator[BlockLocation]:
    """Every block file under a data directory (ours or Garage's), in hash order.

    ``start_after`` is a hex prefix already done; subdirectories wholly before it are
    skipped without listing them, so a resumed walk costs nothing for the finished part.
    With ``stat=False`` the locations carry size and mtime 0 (a scrub needs neither,
    and a ``stat`` per file costs more than listing it).
    """
    try:
        level1 = sorted(e.name for e in os.scandir(root) if len(e.name) == 2 and e.is_dir())
    except FileNotFoundError:
        return
    for n1 in level1:
        if start_after and n1 < start_after[:2]:
            continue
        try:
            level2 = sorted(
                e.name for e in os.scandir(root / n1) if len(e.name) == 2 and e.is_dir()
            )
        except FileNotFoundError:
            continue
        for n2 in level2:
            if start_after and n1 + n2 < start_after[:4]:
                continue
            try:
                entries = sorted(os.scandir(root / n1 / n2), key=lambda e: e.name)
            except FileNotFoundError:
                continue
            for entry in entries:
                m = BLOCK_NAME_RE.match(entry.name)
                if m is None or m.group(1) <= start_after:
                    continue
                if not m.group(1).startswith(n1 + n2):
                    continue
                try:
                    if not entry.is_file():
                        continue  # a directory named like a block is not one
                    size, mtime = 0, 0
                    if stat:
                        st = entry.stat(follow_symlinks=False)
                        size, mtime = st.st_size, st.st_mtime_ns
                except FileNotFoundError:
                    continue
                header = BlockHeader.COMPRESSED if m.group(2) else BlockHeader.PLAIN
                yield BlockLocation(
                    Hash(bytes.fromhex(m.group(1))), entry.path, header, size, mtime
                )
