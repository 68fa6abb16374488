"""Block identifiers.

A block is named by the first 32 bytes of the BLAKE2b-512 digest of its plaintext. That
is Garage's choice, kept for on-disk compatibility; note that it differs from
``blake2b(digest_size=32)``, which has a different parameter block and output.
"""

from __future__ import annotations

import hashlib
import re
from typing import Self

HASH_LEN = 32
_HEX_RE = re.compile(r"[0-9A-Fa-f]+")


def _kind(value: object) -> str:
    return (
        f"{type(value).__name__} {value!r}"
        if isinstance(value, int | str)
        else type(value).__name__
    )


def _hash_bytes(value: object) -> bytes:
    """The 32 bytes of a bytes-like ``value``; ``TypeError`` saying what to use otherwise.

    ``bytes(32)`` is 32 zero bytes and ``bytes("ab")`` needs an encoding: neither an int
    nor a str is ever taken as a hash.
    """
    if isinstance(value, str):
        raise TypeError(
            f"a block hash is 32 bytes, not a str ({value!r}): "
            "use Hash.from_hex(text) for 64 hexadecimal digits"
        )
    if isinstance(value, int):
        raise TypeError(
            f"a block hash is 32 bytes, not an int ({value!r}): use the Hash returned by "
            "put_block, Hash(raw_32_bytes) or Hash.from_hex(text)"
        )
    try:
        view = memoryview(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(
            f"a block hash is 32 bytes (bytes, bytearray or memoryview), got {_kind(value)}"
        ) from None
    with view:
        return view.tobytes()


class Hash(bytes):
    """A 32-byte block hash. Compares and hashes like the underlying ``bytes``.

    ``Hash(value)`` takes exactly 32 bytes of a bytes-like object (``bytes``,
    ``bytearray``, ``memoryview``): ``ValueError`` for another length, ``TypeError`` for
    an ``int`` (``bytes(32)`` would be 32 zero bytes) or a ``str`` (use
    :meth:`Hash.from_hex` for hexadecimal text).
    """

    __slots__ = ()

    def __new__(cls, value: bytes | bytearray | memoryview) -> Self:
        if type(value) is not bytes:
            value = _hash_bytes(value)
        if len(value) != HASH_LEN:
            raise ValueError(f"a block hash is {HASH_LEN} bytes, got {len(value)}")
        return super().__new__(cls, value)

    @classmethod
    def from_hex(cls, text: str) -> Self:
        """Parse 64 hexadecimal digits; ``ValueError`` on anything else."""
        if not isinstance(text, str):
            raise TypeError(f"Hash.from_hex takes a str of 64 hex digits, got {_kind(text)}")
        digits = text.strip()
        if len(digits) != 2 * HASH_LEN or not _HEX_RE.fullmatch(digits):
            raise ValueError(f"not a hexadecimal block hash (64 hex digits): {text!r}")
        return cls(bytes.fromhex(digits))

    def __repr__(self) -> str:
        return f"Hash({self.hex()[:16]}…)"

    def __str__(self) -> str:
        return self.hex()

    def short(self) -> str:
        """The first 16 hex digits, for logs."""
        return self.hex()[:16]


def blake2sum(data: bytes | bytearray | memoryview) -> Hash:
    """Hash plaintext the way Garage does: BLAKE2b-512, truncated to 32 bytes."""
    return Hash(hashlib.blake2b(data).digest()[:HASH_LEN])


class Hasher:
    """Incremental :func:`blake2sum`, for data that arrives in chunks."""

    __slots__ = ("_h",)

    def __init__(self) -> None:
        self._h = hashlib.blake2b()

    def update(self, chunk: bytes | bytearray | memoryview) -> None:
        self._h.update(chunk)

    def digest(self) -> Hash:
        return Hash(self._h.digest()[:HASH_LEN])
