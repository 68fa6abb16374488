"""Block encoding (plain / one zstd frame) and verification (DESIGN §2)."""

from __future__ import annotations

import os

import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from trioblock import CorruptBlockError, Hash, blake2sum
from trioblock._core.block import (
    BlockDecoder,
    BlockHeader,
    DataBlock,
    decode_block,
    encode_block,
    hash_and_encode,
)

# Compressible-ish contents: a small alphabet makes runs that zstd can shrink.
contents = st.one_of(
    st.binary(max_size=3000),
    st.text(alphabet="ab\n", max_size=3000).map(str.encode),
)
levels = st.sampled_from([None, -7, 1, 3, 9])


def _decode_in_chunks(expected: bytes, block: DataBlock, cuts: list[int], **kw: int) -> bytes:
    decoder = BlockDecoder(Hash(expected), block.header, **kw)
    points = sorted({min(c, len(block.payload)) for c in cuts})
    out = []
    start = 0
    for point in [*points, len(block.payload)]:
        out.append(decoder.feed(block.payload[start:point]))
        start = point
    decoder.finish()
    return b"".join(out)


@given(contents)
def test_plain_encoding_is_the_plaintext(data: bytes) -> None:
    block = encode_block(data, None)
    assert block.header is BlockHeader.PLAIN
    assert block.payload == data
    assert not block.compressed
    assert decode_block(blake2sum(data), block) == data


@given(contents, st.sampled_from([-7, 1, 3, 9]))
def test_compressed_encoding_round_trips(data: bytes, level: int) -> None:
    block = encode_block(data, level)
    assert block.header is BlockHeader.COMPRESSED
    assert block.compressed
    assert decode_block(blake2sum(data), block) == data


@given(contents, st.sampled_from([-7, 1, 3]))
def test_compressed_block_is_one_zstd_frame_with_content_checksum(data: bytes, level: int) -> None:
    payload = encode_block(data, level).payload
    params = zstandard.get_frame_parameters(payload)
    assert params.has_checksum
    assert params.content_size == len(data)
    dobj = zstandard.ZstdDecompressor().decompressobj()
    assert dobj.decompress(payload) == data
    assert dobj.eof
    assert dobj.unused_data == b""


def test_incompressible_data_is_still_stored_compressed() -> None:
    data = os.urandom(10_000)
    block = encode_block(data, 1)
    assert block.header is BlockHeader.COMPRESSED
    assert zstandard.get_frame_parameters(block.payload).has_checksum
    assert decode_block(blake2sum(data), block) == data


@given(contents, levels)
def test_hash_and_encode_names_the_plaintext(data: bytes, level: int | None) -> None:
    h, block = hash_and_encode(data, level)
    assert h == blake2sum(data)
    assert block == encode_block(data, level)


def test_block_header_suffixes() -> None:
    assert BlockHeader.PLAIN.suffix == ""
    assert BlockHeader.COMPRESSED.suffix == ".zst"


@given(contents, levels, st.lists(st.integers(min_value=0, max_value=4000), max_size=10))
def test_decoder_accepts_any_chunk_split(data: bytes, level: int | None, cuts: list[int]) -> None:
    block = encode_block(data, level)
    assert _decode_in_chunks(blake2sum(data), block, cuts) == data


@given(contents, levels, st.lists(st.integers(min_value=0, max_value=4000), max_size=10))
def test_decoder_rejects_the_wrong_hash_for_any_split(
    data: bytes, level: int | None, cuts: list[int]
) -> None:
    block = encode_block(data, level)
    with pytest.raises(CorruptBlockError) as info:
        _decode_in_chunks(blake2sum(data + b"!"), block, cuts)
    assert info.value.hash == blake2sum(data + b"!")


def _decode_or_corrupt(h: bytes, block: DataBlock) -> bytes | None:
    """The plaintext, or None when decoding reports ``CorruptBlockError``."""
    try:
        return decode_block(h, block)
    except CorruptBlockError:
        return None


@pytest.mark.parametrize("level", [None, 1, 19], ids=["plain", "zstd1", "zstd19"])
def test_every_single_byte_corruption_is_detected_or_harmless(level: int | None) -> None:
    """No corruption ever yields wrong plaintext.

    A plain copy always fails. A zstd frame is not a canonical encoding: a few bits
    (padding in entropy-coded streams) do not affect the output, and such a copy still
    decodes to exactly the original plaintext, which verification rightly accepts.
    """
    data = b"".join(b"line %d of a block\n" % i for i in range(40)) + os.urandom(64)
    block = encode_block(data, level)
    h = blake2sum(data)
    detected = harmless = 0
    for i in range(len(block.payload)):
        for mask in (0x01, 0x80, 0xFF, 0x5A):
            raw = bytearray(block.payload)
            raw[i] ^= mask
            out = _decode_or_corrupt(h, DataBlock(block.header, bytes(raw)))
            if out is None:
                detected += 1
            else:
                assert out == data, f"byte {i} ^ {mask:#x} decoded to wrong plaintext"
                harmless += 1
    if level is None:
        assert harmless == 0
    else:
        # Almost every flip is caught; the rest are bits zstd itself ignores.
        assert harmless <= detected // 50


@given(
    st.binary(min_size=1, max_size=600),
    st.sampled_from([None, 1]),
    st.integers(min_value=0),
    st.integers(min_value=1, max_value=255),
)
def test_any_single_byte_corruption_never_yields_wrong_plaintext(
    data: bytes, level: int | None, where: int, mask: int
) -> None:
    block = encode_block(data, level)
    raw = bytearray(block.payload)
    raw[where % len(raw)] ^= mask
    out = _decode_or_corrupt(blake2sum(data), DataBlock(block.header, bytes(raw)))
    if level is None:
        assert out is None
    else:
        assert out is None or out == data


@pytest.mark.parametrize("level", [None, 1], ids=["plain", "zstd"])
def test_every_truncation_is_detected(level: int | None) -> None:
    data = b"".join(b"%05d" % i for i in range(300))
    block = encode_block(data, level)
    h = blake2sum(data)
    for n in range(len(block.payload)):
        with pytest.raises(CorruptBlockError):
            decode_block(h, DataBlock(block.header, block.payload[:n]))


@given(contents, levels, st.binary(min_size=1, max_size=64), st.booleans())
def test_trailing_bytes_are_detected(
    data: bytes, level: int | None, extra: bytes, separate_chunk: bool
) -> None:
    block = encode_block(data, level)
    h = blake2sum(data)
    decoder = BlockDecoder(h, block.header)
    with pytest.raises(CorruptBlockError):
        if separate_chunk:
            decoder.feed(block.payload)
            decoder.feed(extra)
        else:
            decoder.feed(block.payload + extra)
        decoder.finish()


@given(contents, st.sampled_from([-7, 1, 3, 9]), st.binary(min_size=1, max_size=64))
def test_whole_block_decoding_rejects_trailing_bytes(data: bytes, level: int, extra: bytes) -> None:
    # The empty plaintext among them: zstd's one-shot decode answers b"" for an empty
    # frame without looking at what follows it.
    block = encode_block(data, level)
    with pytest.raises(CorruptBlockError, match=r"after the end|unused data"):
        decode_block(blake2sum(data), DataBlock(block.header, block.payload + extra))


@pytest.mark.parametrize("extra", [b"x", encode_block(b"abc", 1).payload])
def test_an_empty_block_followed_by_anything_is_rejected(extra: bytes) -> None:
    block = encode_block(b"", 1)
    with pytest.raises(CorruptBlockError, match="after the end"):
        decode_block(blake2sum(b""), DataBlock(block.header, block.payload + extra))


def test_a_second_zstd_frame_is_rejected() -> None:
    data = b"hello " * 100
    block = encode_block(data, 1)
    doubled = DataBlock(BlockHeader.COMPRESSED, block.payload + encode_block(b"", 1).payload)
    with pytest.raises(CorruptBlockError):
        decode_block(blake2sum(data), doubled)


@pytest.mark.parametrize("level", [None, 1], ids=["plain", "zstd"])
def test_max_size_is_enforced(level: int | None) -> None:
    data = b"x" * 1000
    block = encode_block(data, level)
    h = blake2sum(data)
    assert decode_block(h, block, max_size=1000) == data
    with pytest.raises(CorruptBlockError):
        decode_block(h, block, max_size=999)


def test_decompression_bomb_stops_before_finish() -> None:
    bomb = b"\0" * (8 << 20)
    block = encode_block(bomb, 3)
    assert len(block.payload) < 4096
    decoder = BlockDecoder(blake2sum(bomb), block.header, max_size=1 << 20)
    with pytest.raises(CorruptBlockError):
        decoder.feed(block.payload)
    # Once failed, the decoder keeps failing.
    with pytest.raises(CorruptBlockError):
        decoder.feed(b"")
    with pytest.raises(CorruptBlockError):
        decoder.finish()


def test_two_decoders_fed_alternately_in_one_thread_both_verify() -> None:
    """Each decoder owns its decompression state (they shared one per-thread context, so
    two streams interleaved on one thread reported healthy blocks as corrupt)."""
    blocks = [os.urandom(50_000) + b"a" * 200_000, b"b" * 100_000 + os.urandom(70_000)]
    encoded = [encode_block(data, 3) for data in blocks]
    decoders = [BlockDecoder(blake2sum(d), e.header) for d, e in zip(blocks, encoded, strict=True)]
    outputs: list[list[bytes]] = [[], []]
    step = 4096
    longest = max(len(e.payload) for e in encoded)
    for offset in range(0, longest, step):
        for i, (decoder, block) in enumerate(zip(decoders, encoded, strict=True)):
            chunk = block.payload[offset : offset + step]
            if chunk:
                outputs[i].append(decoder.feed(chunk))
    for decoder, out, data in zip(decoders, outputs, blocks, strict=True):
        decoder.finish()
        assert b"".join(out) == data
