"""Block identifiers: ``Hash`` and ``blake2sum`` (DESIGN §2)."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trioblock import Hash, blake2sum
from trioblock._core.hashing import Hasher


@given(st.binary(max_size=4096))
def test_blake2sum_is_first_32_bytes_of_blake2b_512(data: bytes) -> None:
    assert blake2sum(data) == hashlib.blake2b(data).digest()[:32]


@given(st.binary(max_size=1024))
def test_blake2sum_differs_from_blake2b_with_digest_size_32(data: bytes) -> None:
    assert blake2sum(data) != hashlib.blake2b(data, digest_size=32).digest()


def test_blake2sum_known_vector() -> None:
    # hashlib.blake2b(b"").digest()[:32], written out so a change of algorithm shows.
    assert blake2sum(b"").hex() == (
        "786a02f742015903c6c6fd852552d272912f4740e15847618a86e217f71f5419"
    )


@given(st.binary(max_size=256))
def test_blake2sum_returns_a_32_byte_hash(data: bytes) -> None:
    h = blake2sum(data)
    assert isinstance(h, Hash)
    assert isinstance(h, bytes)
    assert len(h) == 32


def test_blake2sum_accepts_bytearray_and_memoryview() -> None:
    assert blake2sum(bytearray(b"abc")) == blake2sum(b"abc") == blake2sum(memoryview(b"abc"))


@given(st.binary(min_size=32, max_size=32))
def test_hash_compares_and_hashes_like_bytes(raw: bytes) -> None:
    h = Hash(raw)
    assert h == raw
    assert hash(h) == hash(raw)
    assert {h: 1}[raw] == 1


@given(st.binary().filter(lambda b: len(b) != 32))
def test_hash_of_wrong_length_is_rejected(raw: bytes) -> None:
    with pytest.raises(ValueError):
        Hash(raw)


@given(st.binary(min_size=32, max_size=32))
def test_hash_from_hex_round_trips(raw: bytes) -> None:
    h = Hash(raw)
    assert Hash.from_hex(h.hex()) == h
    assert Hash.from_hex(h.hex().upper()) == h
    assert isinstance(Hash.from_hex(h.hex()), Hash)
    assert str(h) == h.hex()
    assert h.short() == h.hex()[:16]


@pytest.mark.parametrize(
    "text",
    ["", "00", "0" * 62, "0" * 66, "zz" * 32, "0" * 63, " " + "0" * 64 + "x", "g" + "0" * 63],
)
def test_hash_from_hex_rejects_malformed_text(text: str) -> None:
    with pytest.raises(ValueError):
        Hash.from_hex(text)


@given(st.binary(max_size=2048), st.lists(st.integers(min_value=0, max_value=2048), max_size=8))
def test_hasher_over_any_split_equals_blake2sum(data: bytes, cuts: list[int]) -> None:
    hasher = Hasher()
    points = sorted({min(c, len(data)) for c in cuts})
    start = 0
    for point in [*points, len(data)]:
        hasher.update(data[start:point])
        start = point
    assert hasher.digest() == blake2sum(data)


@pytest.mark.parametrize("value", [0, 32, True, 2**300])
def test_an_int_is_not_a_hash(value: int) -> None:
    # bytes(32) is 32 zero bytes: Hash(32) must not silently be the all-zero hash.
    with pytest.raises(TypeError, match=r"not an int.*Hash\.from_hex"):
        Hash(value)


def test_a_hex_string_points_to_from_hex() -> None:
    text = blake2sum(b"x").hex()
    with pytest.raises(TypeError, match=r"Hash\.from_hex"):
        Hash(text)  # type: ignore[arg-type]
    assert Hash.from_hex(text) == blake2sum(b"x")


@pytest.mark.parametrize("value", [None, [0] * 32, (0,) * 32, 3.5, object()])
def test_other_non_bytes_values_are_type_errors(value: object) -> None:
    with pytest.raises(TypeError, match="32 bytes"):
        Hash(value)  # type: ignore[arg-type]


def test_bytes_like_values_are_accepted() -> None:
    raw = bytes(range(32))
    assert Hash(bytearray(raw)) == Hash(memoryview(raw)) == Hash(Hash(raw)) == raw
    assert type(Hash(memoryview(raw))) is Hash


def test_from_hex_rejects_non_str() -> None:
    with pytest.raises(TypeError, match="str"):
        Hash.from_hex(b"00" * 32)  # type: ignore[arg-type]


async def test_incref_of_an_int_counts_nothing(open_node: Any) -> None:
    async with open_node() as bm:
        for bad in (32, 0, blake2sum(b"x").hex()):
            with pytest.raises(TypeError):
                bm.incref(bad)
            with pytest.raises(TypeError):
                await bm.get_block(bad)
        assert bm.get_block_rc(bytes(32)) == 0
        assert bm.rc_len() == 0
