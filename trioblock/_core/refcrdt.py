"""Cluster references: one entry per (block, owner), merged as a CRDT.

The rules of this file:

- A reference is the pair (hash, owner). Its state is ``RefState(deleted, ts)``: alive
  or deleted (a tombstone), and the msec timestamp of the update that set it.
- Merging two states keeps the greater under the order (deleted, ts): a tombstone beats
  any alive state, and among equals the later timestamp wins. That order is total, so
  the merge is a join: commutative, associative and idempotent. Retries, replays and
  anti-entropy in any order converge to the same state on every node.
- The local reference count changes exactly when a pair's merged state flips between
  alive and not alive (absent or deleted): :func:`rc_delta`.
- An owner is 1..128 bytes; a ``str`` is its UTF-8 encoding.
- Stored form (table ``block_ref``): key ``hash ‖ owner``, value ``u8(deleted) ‖ be64(ts)``.
- Anti-entropy compares digests of the entries two nodes share under a key prefix (the
  first 0..4 bytes of the hash). A digest is BLAKE2b-256 over the sorted entries; equal
  digests mean equal sets (up to a hash collision).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable
from dataclasses import dataclass

from .hashing import HASH_LEN, Hash

#: Longest reference owner, in bytes.
MAX_OWNER_LEN = 128
#: Longest partition prefix of the reference table's hash space, in bytes.
MAX_PREFIX_LEN = 4
#: A prefix holding at most this many entries (on either side) is compared entry by
#: entry; a larger one is split into its 256 children first.
LEAF_ENTRIES = 512

_VALUE = struct.Struct(">BQ")
#: Largest timestamp of a reference entry (msec; a signed 64-bit integer on the wire).
MAX_TS = (1 << 63) - 1

#: The wire and exchange form of one entry: (hash, owner, deleted, ts).
RefTuple = tuple[bytes, bytes, bool, int]


@dataclass(frozen=True, slots=True, order=True)
class RefState:
    """Alive or deleted, and the timestamp (msec) of the update that set it.

    Ordered as (deleted, ts): :func:`merge` keeps the greater.
    """

    deleted: bool
    ts: int

    def encode(self) -> bytes:
        return _VALUE.pack(1 if self.deleted else 0, self.ts)

    @classmethod
    def decode(cls, value: bytes) -> RefState:
        if len(value) != _VALUE.size:
            raise ValueError(f"block_ref value of {len(value)} bytes (expected {_VALUE.size})")
        flag, ts = _VALUE.unpack(value)
        if flag > 1:
            raise ValueError(f"block_ref value with deleted flag {flag}")
        return cls(bool(flag), ts)

    @property
    def alive(self) -> bool:
        return not self.deleted


@dataclass(frozen=True, slots=True)
class Reference:
    """One reference to a block as this node sees it (``BlockManager.references``).

    ``owner`` is always bytes; ``deleted`` marks a tombstone; ``updated_msec`` is the
    timestamp of the update that set this state.
    """

    owner: bytes
    deleted: bool
    updated_msec: int


def merge(a: RefState | None, b: RefState) -> RefState:
    """The join of two states of one pair (``a`` may be absent)."""
    if a is None:
        return b
    return a if a >= b else b


def is_alive(state: RefState | None) -> bool:
    return state is not None and not state.deleted


def rc_delta(old: RefState | None, new: RefState | None) -> int:
    """+1 when the pair became alive, -1 when it stopped being alive, else 0."""
    return int(is_alive(new)) - int(is_alive(old))


def owner_bytes(owner: object) -> bytes:
    """Normalise an owner: ``str`` → UTF-8; bytes-like → bytes; 1..128 bytes."""
    if isinstance(owner, str):
        raw = owner.encode("utf-8")
    elif isinstance(owner, bytes | bytearray | memoryview):
        raw = bytes(owner)
    else:
        raise TypeError(f"a reference owner is str or bytes, not {type(owner).__name__}")
    if not 1 <= len(raw) <= MAX_OWNER_LEN:
        raise ValueError(f"a reference owner is 1..{MAX_OWNER_LEN} bytes, got {len(raw)}")
    return raw


def ref_key(hash: bytes, owner: bytes) -> bytes:
    return bytes(hash) + owner


def split_key(key: bytes) -> tuple[Hash, bytes]:
    if not HASH_LEN < len(key) <= HASH_LEN + MAX_OWNER_LEN:
        raise ValueError(f"block_ref key of {len(key)} bytes")
    return Hash(key[:HASH_LEN]), key[HASH_LEN:]


def check_tuple(entry: RefTuple) -> RefTuple:
    """Validate an entry received from anywhere; ``ValueError`` when malformed."""
    hash, owner, deleted, ts = entry
    if len(hash) != HASH_LEN:
        raise ValueError("reference with a malformed hash")
    owner_bytes(owner)
    if not isinstance(deleted, bool) or not isinstance(ts, int) or not 0 <= ts <= MAX_TS:
        raise ValueError("reference with a malformed state")
    return entry


def prefix_bounds(prefix: bytes) -> tuple[bytes, bytes | None]:
    """Keys starting with ``prefix`` are ``lo <= key < hi`` (``hi`` None: no bound)."""
    digits = bytearray(prefix)
    while digits and digits[-1] == 0xFF:
        digits.pop()
    if not digits:
        return bytes(prefix), None
    digits[-1] += 1
    return bytes(prefix), bytes(digits)


def children(prefix: bytes) -> list[bytes]:
    """The 256 one-byte-longer prefixes under ``prefix``."""
    if len(prefix) >= MAX_PREFIX_LEN:
        raise ValueError("prefix too long to split")
    return [prefix + bytes([b]) for b in range(256)]


class Digest:
    """Incremental digest of sorted (key, value) entries: count and BLAKE2b-256."""

    __slots__ = ("_h", "count")

    def __init__(self) -> None:
        self._h = hashlib.blake2b(digest_size=32)
        self.count = 0

    def add(self, key: bytes, value: bytes) -> None:
        self._h.update(bytes([len(key) - HASH_LEN]) + key + value)
        self.count += 1

    def result(self) -> tuple[int, bytes]:
        return self.count, self._h.digest()


def digest_of(entries: Iterable[tuple[bytes, bytes]]) -> tuple[int, bytes]:
    d = Digest()
    for key, value in entries:
        d.add(key, value)
    return d.result()


def plan_descent(
    prefixes: list[bytes],
    local: list[tuple[int, bytes]],
    remote: list[tuple[int, bytes]],
) -> tuple[list[bytes], list[bytes]]:
    """Which prefixes to compare entry by entry, and which to split further.

    Equal digests need nothing. A differing prefix small enough on both sides (or one
    that cannot be split) is a leaf; a larger one is split into its children.
    """
    leaves: list[bytes] = []
    split: list[bytes] = []
    for prefix, mine, theirs in zip(prefixes, local, remote, strict=True):
        if mine == theirs:
            continue
        small = max(mine[0], theirs[0]) <= LEAF_ENTRIES
        if small or len(prefix) >= MAX_PREFIX_LEN:
            leaves.append(prefix)
        else:
            split.append(prefix)
    return leaves, split


def missing_or_older(mine: dict[bytes, RefState], theirs: dict[bytes, RefState]) -> list[bytes]:
    """Keys of entries the other side lacks or holds in an older state, sorted."""
    return sorted(k for k, s in mine.items() if merge(theirs.get(k), s) != theirs.get(k))


__all__ = [
    "LEAF_ENTRIES",
    "MAX_OWNER_LEN",
    "MAX_PREFIX_LEN",
    "Digest",
    "RefState",
    "RefTuple",
    "Reference",
    "children",
    "check_tuple",
    "digest_of",
    "is_alive",
    "merge",
    "missing_or_older",
    "owner_bytes",
    "plan_descent",
    "prefix_bounds",
    "rc_delta",
    "ref_key",
    "split_key",
]
