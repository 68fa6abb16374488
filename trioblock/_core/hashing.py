"""Block identifiers.

A block is named by the first 32 bytes of the BLAKE2b-512 digest of its plaintext. That
is Garage's choice, kept for on-disk compatibility; note that it differs from
``blake2b(digest_size=32)``, which has a different parameter block and output.
"""

from __future__ import annotations

import hashlib
from typing import Self

HASH_LEN = 32


class Hash(bytes):
    """A 32-byte block hash. Compares and hashes like the underlying ``bytes``."""

    __slots__ = ()

    def __new__(cls, value: bytes | bytearray | memoryview) -> Self:
        raw = bytes(value)
        if len(raw) != HASH_LEN:
            raise ValueError(f"a block hash is {HASH_LEN} bytes, got {len(raw)}")
        return super().__new__(cls, raw)

    @classmethod
    def from_hex(cls, text: str) -> Self:
        """Parse 64 hexadecimal digits; ``ValueError`` on anything else."""
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raise ValueError(f"not a hexadecimal block hash: {text!r}") from None
        return cls(raw)

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
