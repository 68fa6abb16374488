"""What every wire message shares: the message base class and its registry, the
protocol's limits, and the readers of fields several messages have.

Each message class (in ``msg_session``, ``msg_blocks``, ``msg_layout``, ``msg_refs``) is
registered with :func:`wire_message`; ``messages`` gathers them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final, TypeVar

from .._core.hashing import HASH_LEN, Hash
from .._core.refcrdt import MAX_PREFIX_LEN
from ..errors import ProtocolError
from .fields import (
    RefTuple,
    check_bool,
    check_bytes,
    read_list,
    read_ref_entry,
)

if TYPE_CHECKING:
    from .messages import Message

#: Version of the wire protocol, sent in :class:`Hello`; peers must agree exactly.
PROTOCOL_VERSION: Final = 1
#: Length of a handshake nonce, in bytes.
NONCE_LEN: Final = 32
#: Length of a handshake proof (HMAC-SHA256), in bytes.
PROOF_LEN: Final = 32
#: Longest node id accepted on the wire, in characters.
MAX_NODE_ID_LEN: Final = 255
#: Longest error message accepted on the wire, in characters.
MAX_ERROR_MESSAGE_LEN: Final = 4096
#: Most ref entries in one message (``RefUpdate``, ``RefCollect``, ``RefEntries``).
MAX_REF_ENTRIES: Final = 4096
#: Most hashes asked in one ``NeedBlocksQuery`` (and answers in its reply).
MAX_NEED_BLOCKS: Final = 256
#: Most blocks carried by one ``PutBlocks`` (and results in its reply).
MAX_PUT_BLOCKS: Final = 16
#: Most bytes of block bodies carried by one ``PutBlocks``.
MAX_PUT_BLOCKS_BYTES: Final = 4 * 1024 * 1024
#: Most hashes asked in one ``GetBlocks`` (and results in its reply).
MAX_GET_BLOCKS: Final = 64
#: Most bytes of block bodies in one ``GetBlocksReply``, unless its first block alone is
#: larger (a reply always carries at least one result).
MAX_GET_BLOCKS_BYTES: Final = 4 * 1024 * 1024
#: Most hashes asked in one ``BlocksHeldQuery`` (and answers in its reply).
MAX_HELD_QUERY: Final = 1024
#: Most partitions asked in one ``RefDigests``.
MAX_REF_PREFIXES: Final = 256
#: Longest resume key of a ``RefFetch``, in bytes.
MAX_RESUME_KEY_LEN: Final = 160

#: Error kinds a node sends; a peer may send others, which callers treat as generic failures.
ERROR_KINDS: Final = frozenset(
    {"missing", "corrupt", "refused", "internal", "protocol", "busy", "auth", "layout"}
)


class Wire:
    """What every message class provides (its fields come from ``@dataclass``)."""

    __slots__ = ()

    #: Whether this message is followed by a streamed body (see :func:`has_body`).
    def announces_body(self) -> bool:
        return False

    def to_map(self) -> dict[str, Any]:
        """The message's fields as a CBOR-ready map, without ``"type"``."""
        return {}

    @classmethod
    def from_map(cls, m: Mapping[str, Any]) -> Message:
        """Check a received map and build the message; ``ProtocolError`` if it is off."""
        raise NotImplementedError


DECODERS: dict[str, Callable[[Mapping[str, Any]], Message]] = {}
_W = TypeVar("_W", bound=type[Wire])


def wire_message(cls: _W) -> _W:
    DECODERS[cls.__name__] = cls.from_map
    return cls


def as_bytes(value: Any) -> Any:
    # Byte-like values become bytes; anything else is left for the checks to refuse
    # (``bytes(32)`` would silently make an all-zero hash of an int).
    return bytes(value) if isinstance(value, bytes | bytearray | memoryview) else value


def entries_to_wire(entries: list[RefTuple]) -> list[Any]:
    return [
        [as_bytes(e[0]), as_bytes(e[1]), e[2], e[3]]
        if isinstance(e, tuple | list) and len(e) == 4
        else e
        for e in entries
    ]


def read_entries(m: Mapping[str, Any], kind: str, min_len: int) -> list[RefTuple]:
    items = read_list(m, "entries", kind, min_len, MAX_REF_ENTRIES)
    return [read_ref_entry(item, f"{kind}.entries[{i}]") for i, item in enumerate(items)]


def read_hashes(m: Mapping[str, Any], kind: str, max_len: int) -> list[Hash]:
    """The ``hashes`` field: 1..``max_len`` hashes of 32 bytes."""
    items = read_list(m, "hashes", kind, 1, max_len)
    return [
        Hash(check_bytes(h, f"{kind}.hashes[{i}]", HASH_LEN, HASH_LEN)) for i, h in enumerate(items)
    ]


def read_bools(m: Mapping[str, Any], key: str, kind: str, max_len: int) -> list[bool]:
    """The field ``key``: 0..``max_len`` booleans (a reply's answer per item asked; the
    asking side checks the length)."""
    items = read_list(m, key, kind, 0, max_len)
    return [check_bool(v, f"{kind}.{key}[{i}]") for i, v in enumerate(items)]


def read_prefix(value: Any, what: str) -> bytes:
    return check_bytes(value, what, 0, MAX_PREFIX_LEN)


def read_body_flag(m: Mapping[str, Any], kind: str) -> bool:
    value = m.get("body", False)
    if not isinstance(value, bool):
        raise ProtocolError(f"{kind}.body must be a boolean")
    return value


__all__ = [
    "DECODERS",
    "ERROR_KINDS",
    "MAX_ERROR_MESSAGE_LEN",
    "MAX_GET_BLOCKS",
    "MAX_GET_BLOCKS_BYTES",
    "MAX_HELD_QUERY",
    "MAX_NEED_BLOCKS",
    "MAX_NODE_ID_LEN",
    "MAX_PREFIX_LEN",
    "MAX_REF_ENTRIES",
    "MAX_REF_PREFIXES",
    "MAX_RESUME_KEY_LEN",
    "NONCE_LEN",
    "PROOF_LEN",
    "PROTOCOL_VERSION",
    "Wire",
    "as_bytes",
    "entries_to_wire",
    "read_body_flag",
    "read_entries",
    "read_bools",
    "read_hashes",
    "read_prefix",
    "wire_message",
]
