"""Strict readers for the fields of a received message map (pure, no I/O).

Every reader takes the decoded map, the field's key and the message's name (for the error
text), checks presence, type and size, and returns the value or raises
:class:`~trioblock.errors.ProtocolError`. CBOR distinguishes booleans from integers and
byte strings from text; so do these readers (``True`` is not an integer here).

A *ref entry* (a cluster reference on the wire) is the CBOR array
``[hash: 32 bytes, owner: 1..128 bytes, deleted: bool, ts: int 0..2**63-1]``; in Python it
is a :data:`RefTuple`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from .._core.hashing import HASH_LEN, Hash
from .._core.refcrdt import MAX_OWNER_LEN, MAX_TS, RefTuple
from ..errors import ProtocolError

__all__ = [
    "MAX_OPAQUE_DEPTH",
    "MAX_OWNER_LEN",
    "MAX_TS",
    "RefTuple",
    "get",
    "read_bool",
    "read_bytes",
    "read_hash",
    "read_int",
    "read_list",
    "read_opaque",
    "read_ref_entry",
    "read_str",
]

#: Deepest nesting accepted in an opaque admin map.
MAX_OPAQUE_DEPTH: Final = 32


def get(m: Mapping[str, Any], key: str, kind: str) -> Any:
    """``m[key]``, or ``ProtocolError`` naming the missing field."""
    try:
        return m[key]
    except KeyError:
        raise ProtocolError(f"{kind} message lacks the {key!r} field") from None


def read_str(m: Mapping[str, Any], key: str, kind: str, *, max_len: int, empty: bool) -> str:
    """A text field of at most ``max_len`` characters (non-empty unless ``empty``)."""
    value = get(m, key, kind)
    if not isinstance(value, str):
        raise ProtocolError(f"{kind}.{key} must be a text string")
    if len(value) > max_len or (not empty and not value):
        raise ProtocolError(f"{kind}.{key} has a bad length ({len(value)})")
    return value


def check_bytes(value: Any, what: str, min_len: int, max_len: int) -> bytes:
    """``value`` if it is a byte string of ``min_len..max_len`` bytes."""
    if not isinstance(value, bytes):
        raise ProtocolError(f"{what} must be a byte string")
    if not min_len <= len(value) <= max_len:
        if min_len == max_len:
            raise ProtocolError(f"{what} must be {min_len} bytes")
        raise ProtocolError(f"{what} must be {min_len}..{max_len} bytes, not {len(value)}")
    return value


def read_bytes(m: Mapping[str, Any], key: str, kind: str, min_len: int, max_len: int) -> bytes:
    """A byte-string field of ``min_len..max_len`` bytes."""
    return check_bytes(get(m, key, kind), f"{kind}.{key}", min_len, max_len)


def check_int(value: Any, what: str, low: int | None = None, high: int | None = None) -> int:
    """``value`` if it is an integer (not a boolean) within ``low..high``."""
    # bool is an int subclass in Python but a distinct type in CBOR: refuse it here.
    if not isinstance(value, int) or isinstance(value, bool):
        raise ProtocolError(f"{what} must be an integer")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ProtocolError(f"{what} out of range")
    return value


def read_int(
    m: Mapping[str, Any], key: str, kind: str, low: int | None = None, high: int | None = None
) -> int:
    """An integer field within ``low..high``."""
    return check_int(get(m, key, kind), f"{kind}.{key}", low, high)


def check_bool(value: Any, what: str) -> bool:
    """``value`` if it is a boolean."""
    if not isinstance(value, bool):
        raise ProtocolError(f"{what} must be a boolean")
    return value


def read_bool(m: Mapping[str, Any], key: str, kind: str) -> bool:
    """A boolean field."""
    return check_bool(get(m, key, kind), f"{kind}.{key}")


def read_hash(m: Mapping[str, Any], kind: str, key: str = "hash") -> Hash:
    """A 32-byte hash field."""
    return Hash(read_bytes(m, key, kind, HASH_LEN, HASH_LEN))


def read_list(m: Mapping[str, Any], key: str, kind: str, min_len: int, max_len: int) -> list[Any]:
    """An array field of ``min_len..max_len`` items (items unchecked)."""
    value = get(m, key, kind)
    if not isinstance(value, list):
        raise ProtocolError(f"{kind}.{key} must be an array")
    if not min_len <= len(value) <= max_len:
        raise ProtocolError(f"{kind}.{key} must hold {min_len}..{max_len} items, not {len(value)}")
    return value


def read_ref_entry(value: Any, what: str) -> RefTuple:
    """A ref entry ``[hash, owner, deleted, ts]``, checked field by field."""
    if not isinstance(value, list) or len(value) != 4:
        raise ProtocolError(f"{what} must be an array [hash, owner, deleted, ts]")
    hash_, owner, deleted, ts = value
    return (
        check_bytes(hash_, f"{what}.hash", HASH_LEN, HASH_LEN),
        check_bytes(owner, f"{what}.owner", 1, MAX_OWNER_LEN),
        check_bool(deleted, f"{what}.deleted"),
        check_int(ts, f"{what}.ts", 0, MAX_TS),
    )


def _check_opaque(value: Any, depth: int = 0) -> None:
    if depth > MAX_OPAQUE_DEPTH:
        raise ProtocolError("opaque map nested too deeply")
    if value is None or isinstance(value, str | bytes | int | float | bool):
        return
    if isinstance(value, list):
        for item in value:
            _check_opaque(item, depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ProtocolError("opaque map keys must be text strings")
            _check_opaque(item, depth + 1)
        return
    raise ProtocolError(f"opaque map holds an unsupported value of type {type(value).__name__}")


def read_opaque(m: Mapping[str, Any], key: str, kind: str) -> dict[str, Any]:
    """A map of plain data (string keys; lists, text, bytes, numbers, booleans, null)."""
    value = get(m, key, kind)
    if not isinstance(value, dict):
        raise ProtocolError(f"{kind}.{key} must be a map")
    _check_opaque(value)
    return value
