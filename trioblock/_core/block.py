"""Block encoding and verification, pure and synchronous.

Rules kept here:

- A block is stored and sent either *plain* (its plaintext) or *compressed* (exactly one
  zstd frame, written with a content checksum and the content size).
- Verification always hashes the plaintext and compares it with the block's name, for
  both encodings. zstd's own checksum is checked on the way but never trusted alone.
- Decoding is streaming and bounded: a :class:`BlockDecoder` takes encoded chunks and
  gives plaintext chunks, refusing to produce more than ``max_size`` bytes (a
  decompression bomb from a peer stops early), and :meth:`BlockDecoder.finish` says
  whether the whole thing was valid. Each decoder owns its decompression state: a
  stream may be fed from different threads and interleaved with other streams.

Everything here is CPU work; callers run it in a worker thread.
"""

from __future__ import annotations

import enum
import threading
from dataclasses import dataclass

import zstandard

from ..errors import CorruptBlockError
from .hashing import Hash, Hasher, blake2sum

#: Per-thread zstd contexts (see _compressor and _decompressor).
_local = threading.local()

#: Upper bound on a block's plaintext size unless configured otherwise.
DEFAULT_MAX_BLOCK_SIZE = 64 * 1024 * 1024


def max_encoded_size(max_size: int) -> int:
    """The largest encoded copy of a block of at most ``max_size`` plaintext bytes.

    zstd's worst case for one frame (``ZSTD_compressBound``) plus room for the frame's
    header and checksum; a plain copy is its plaintext. Nothing larger is ever read.
    """
    small = ((128 << 10) - max_size) >> 11 if max_size < (128 << 10) else 0
    return max_size + (max_size >> 8) + small + 64


class BlockHeader(enum.Enum):
    """How a block's bytes are encoded, on disk and on the wire."""

    PLAIN = "plain"
    COMPRESSED = "compressed"

    @property
    def suffix(self) -> str:
        """File-name suffix of a copy in this encoding."""
        return ".zst" if self is BlockHeader.COMPRESSED else ""


@dataclass(frozen=True, slots=True)
class DataBlock:
    """A block's bytes in one encoding: what is written to disk or sent to a peer."""

    header: BlockHeader
    payload: bytes

    @property
    def compressed(self) -> bool:
        return self.header is BlockHeader.COMPRESSED

    def __len__(self) -> int:
        return len(self.payload)


def _compressor(level: int) -> zstandard.ZstdCompressor:
    """One compression context per thread and level (reused: making one is not free)."""
    cache: dict[int, zstandard.ZstdCompressor] | None = getattr(_local, "cctx", None)
    if cache is None:
        cache = _local.cctx = {}
    cctx = cache.get(level)
    if cctx is None:
        cctx = cache[level] = zstandard.ZstdCompressor(
            level=level, write_checksum=True, write_content_size=True
        )
    return cctx


def encode_block(plaintext: bytes, compression_level: int | None) -> DataBlock:
    """Encode plaintext for storage: one zstd frame when a level is given, else plain.

    Incompressible data is compressed too (zstd stores it in raw blocks, a few bytes
    larger): the contract is that a configured level means every block is ``.zst``.
    """
    if compression_level is None:
        return DataBlock(BlockHeader.PLAIN, bytes(plaintext))
    return DataBlock(BlockHeader.COMPRESSED, _compressor(compression_level).compress(plaintext))


def hash_and_encode(plaintext: bytes, compression_level: int | None) -> tuple[Hash, DataBlock]:
    """Hash plaintext and encode it, in one call (one trip to a worker thread)."""
    return blake2sum(plaintext), encode_block(plaintext, compression_level)


class BlockDecoder:
    """Turns the encoded bytes of one block into verified plaintext, chunk by chunk.

    ``feed`` returns the plaintext decoded so far (possibly empty); ``finish`` raises
    :class:`CorruptBlockError` unless the input was one complete, valid encoding whose
    plaintext hashes to ``expected``. A caller that must not hand out unverified bytes
    holds back the last chunk until ``finish`` returns.
    """

    def __init__(
        self,
        expected: Hash,
        header: BlockHeader,
        *,
        max_size: int = DEFAULT_MAX_BLOCK_SIZE,
    ) -> None:
        self.expected = expected
        self.header = header
        self.max_size = max_size
        self._hasher = Hasher()
        self._size = 0
        self._failed: str | None = None
        # Its own decompression context: a decoder lives across calls (and threads), so
        # sharing the per-thread context would let two streams overwrite each other.
        self._dobj = (
            zstandard.ZstdDecompressor().decompressobj()
            if header is BlockHeader.COMPRESSED
            else None
        )

    def _fail(self, reason: str) -> CorruptBlockError:
        self._failed = reason
        return CorruptBlockError(self.expected, f"block {self.expected.hex()} is corrupt: {reason}")

    def feed(self, chunk: bytes | bytearray | memoryview) -> bytes:
        """Decode one chunk of encoded bytes; raise ``CorruptBlockError`` early if possible."""
        if self._failed is not None:
            raise CorruptBlockError(self.expected, self._failed)
        if self._dobj is None:
            out = bytes(chunk)
        else:
            if self._dobj.eof:
                if len(chunk):
                    raise self._fail("bytes after the end of the zstd frame")
                return b""
            try:
                out = self._dobj.decompress(bytes(chunk))
            except zstandard.ZstdError as exc:
                raise self._fail(f"zstd: {exc}") from None
            if self._dobj.unused_data:  # only ever set once the frame has ended
                raise self._fail("bytes after the end of the zstd frame")
        self._size += len(out)
        if self._size > self.max_size:
            raise self._fail(f"plaintext exceeds the {self.max_size}-byte block size limit")
        self._hasher.update(out)
        return out

    def finish(self) -> None:
        """Check completeness and the plaintext hash."""
        if self._failed is not None:
            raise CorruptBlockError(self.expected, self._failed)
        if self._dobj is not None and not self._dobj.eof:
            raise self._fail("truncated zstd frame")
        actual = self._hasher.digest()
        if actual != self.expected:
            raise self._fail(f"plaintext hashes to {actual.hex()}")


def decode_block(
    expected: Hash, block: DataBlock, *, max_size: int = DEFAULT_MAX_BLOCK_SIZE
) -> bytes:
    """Verify a whole encoded block and return its plaintext.

    The same rules as :class:`BlockDecoder`, in one pass: a frame that declares its
    content size (every frame trioblock writes) is checked against ``max_size`` before
    anything is decompressed; one that does not is decoded chunk by chunk instead.
    """
    payload = block.payload
    if block.header is BlockHeader.PLAIN:
        if len(payload) > max_size:
            raise _corrupt(expected, f"plaintext exceeds the {max_size}-byte block size limit")
        plaintext = bytes(payload)
    else:
        try:
            declared = zstandard.frame_content_size(payload)
        except zstandard.ZstdError as exc:
            raise _corrupt(expected, f"zstd: {exc}") from None
        if declared < 0:  # size unknown: bounded streaming decode
            decoder = BlockDecoder(expected, block.header, max_size=max_size)
            out = decoder.feed(payload)
            decoder.finish()
            return out
        if declared > max_size:
            raise _corrupt(expected, f"plaintext exceeds the {max_size}-byte block size limit")
        if declared > 0:
            # One-shot into a buffer of the declared size: about a third of the cost of
            # a decompression object, and it lets go of the interpreter lock for the
            # whole decode. zstd itself refuses a frame that is truncated, that decodes
            # to another size than declared, or (``allow_extra_data=False``) that has
            # bytes after its end.
            try:
                plaintext = _decompressor().decompress(payload, allow_extra_data=False)
            except zstandard.ZstdError as exc:
                raise _corrupt(expected, f"zstd: {exc}") from None
        else:
            # An empty frame: the one-shot call answers b"" without looking at what
            # follows, so the frame's end is checked with a decompression object.
            dobj = _decompressor().decompressobj()
            try:
                plaintext = dobj.decompress(payload)
            except zstandard.ZstdError as exc:
                raise _corrupt(expected, f"zstd: {exc}") from None
            if not dobj.eof:
                raise _corrupt(expected, "truncated zstd frame")
            if dobj.unused_data:
                raise _corrupt(expected, "bytes after the end of the zstd frame")
    actual = blake2sum(plaintext)
    if actual != expected:
        raise _corrupt(expected, f"plaintext hashes to {actual.hex()}")
    return plaintext


def _decompressor() -> zstandard.ZstdDecompressor:
    """One decompression context per thread (making one costs more than a 4 KiB block).

    Only for one-shot decodes that start and finish within one call (``decode_block``):
    nothing else can use the context in between.
    """
    dctx: zstandard.ZstdDecompressor | None = getattr(_local, "dctx", None)
    if dctx is None:
        dctx = _local.dctx = zstandard.ZstdDecompressor()
    return dctx


def _corrupt(expected: Hash, reason: str) -> CorruptBlockError:
    return CorruptBlockError(expected, f"block {expected.hex()} is corrupt: {reason}")
