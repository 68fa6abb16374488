"""The messages of trioblock's wire protocol, and their CBOR map form.

Rules kept here:

- A message is a frozen dataclass; on the wire it is one CBOR map whose ``"type"`` key is
  the class name and whose other keys are its fields. Each class holds both directions of
  its own map form (``to_map`` and ``from_map``), so a new message is one class here. This
  module is pure: it turns messages into maps and maps back into messages, nothing else.
- :func:`message_from_map` trusts nothing. Every field is checked for presence, type and
  size (a hash is exactly 32 bytes, a header is ``"plain"`` or ``"compressed"``, a nonce is
  32 bytes, a node id is a short non-empty string, a list has bounded length…; see
  :mod:`.fields`) and anything off raises :class:`~trioblock.errors.ProtocolError`. Keys a
  message does not know are ignored, so a newer peer may add optional fields without
  breaking older ones.
- Opaque maps (``Admin.request``, ``AdminReply.reply``) may hold only plain data: maps with
  string keys, lists, strings, bytes, integers, floats, booleans and null.
- Whether a message is followed by a streamed body is decided here too
  (:func:`has_body`): a :class:`PutBlock` always is; an :class:`Admin` or
  :class:`AdminReply` is when its ``with_body`` flag (``"body": true`` on the wire) is
  set, so operator requests can carry blocks larger than a message frame.
- Cluster references travel as *ref entries* ``[hash, owner, deleted, ts]``
  (:data:`RefTuple` in Python): :class:`RefUpdate` and :class:`RefCollect` carry
  1..4096 of them, :class:`RefDigests` asks for the digest of up to 256 partitions of
  the hash space (a partition is a hash prefix of 0..4 bytes), :class:`RefFetch` pages
  through one partition.
- :class:`NeedBlocksQuery` asks about 1..256 blocks at once; its reply holds one boolean
  per hash, in order.
- For applications: :class:`RefUpdate` may ask (``"report": true``) which of its alive
  entries reference a block the receiver holds no copy of, answered by
  :class:`RefUpdateReply` (an older peer ignores the flag and answers ``Ok``);
  :class:`BlocksHeldQuery` asks which of 1..1024 blocks the peer holds a copy of;
  :class:`OwnedQuery` pages through the references of one owner.
- :class:`LayoutExchange` compares two nodes' layout histories by digest; a history
  travels as the message's body (its own CBOR encoding, checked by the layout code), so
  it is bounded by the body limit, not the message-frame limit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TypeAlias, TypeVar

from .._core.block import BlockHeader
from .._core.hashing import HASH_LEN, Hash
from .._core.refs import MAX_OWNER_LEN
from ..errors import ProtocolError
from .fields import (
    MAX_OPAQUE_DEPTH,
    MAX_TIMESTAMP,
    RefTuple,
    check_bool,
    check_bytes,
    check_int,
    get,
    read_bool,
    read_bytes,
    read_hash,
    read_int,
    read_list,
    read_opaque,
    read_ref_entry,
    read_str,
)

__all__ = [
    "ERROR_KINDS",
    "MAX_ERROR_MESSAGE_LEN",
    "MAX_HELD_QUERY",
    "MAX_NEED_BLOCKS",
    "MAX_OPAQUE_DEPTH",
    "MAX_PREFIX_LEN",
    "MAX_REF_ENTRIES",
    "MAX_REF_PREFIXES",
    "MAX_RESUME_KEY_LEN",
    "NONCE_LEN",
    "PROTOCOL_VERSION",
    "Admin",
    "AdminReply",
    "Auth",
    "BlocksHeldQuery",
    "BlocksHeldReply",
    "CorruptReport",
    "Error",
    "GetBlock",
    "Hello",
    "LayoutExchange",
    "LayoutExchangeReply",
    "Message",
    "NeedBlockQuery",
    "NeedBlockReply",
    "NeedBlocksQuery",
    "NeedBlocksReply",
    "NODE_REPORTS",
    "NodeReportQuery",
    "NodeReportReply",
    "Ok",
    "OwnedQuery",
    "OwnedReply",
    "PutBlock",
    "RefCollect",
    "RefDigests",
    "RefDigestsReply",
    "RefEntries",
    "RefFetch",
    "RefTuple",
    "RefUpdate",
    "RefUpdateReply",
    "has_body",
    "message_from_map",
    "message_to_map",
]

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
#: Most hashes asked in one ``BlocksHeldQuery`` (and answers in its reply).
MAX_HELD_QUERY: Final = 1024
#: Most partitions asked in one ``RefDigests``.
MAX_REF_PREFIXES: Final = 256
#: Longest partition prefix, in bytes.
MAX_PREFIX_LEN: Final = 4
#: Longest resume key of a ``RefFetch``, in bytes.
MAX_RESUME_KEY_LEN: Final = 160

#: Error kinds a node sends; a peer may send others, which callers treat as generic failures.
ERROR_KINDS: Final = frozenset(
    {"missing", "corrupt", "refused", "internal", "protocol", "busy", "auth", "layout"}
)


class _Wire:
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


_DECODERS: dict[str, Callable[[Mapping[str, Any]], Message]] = {}
_W = TypeVar("_W", bound=type[_Wire])


def _message(cls: _W) -> _W:
    _DECODERS[cls.__name__] = cls.from_map
    return cls


def _b(value: Any) -> Any:
    # Byte-like values become bytes; anything else is left for the checks to refuse
    # (``bytes(32)`` would silently make an all-zero hash of an int).
    return bytes(value) if isinstance(value, bytes | bytearray | memoryview) else value


def _entries_to_wire(entries: list[RefTuple]) -> list[Any]:
    return [
        [_b(e[0]), _b(e[1]), e[2], e[3]] if isinstance(e, tuple | list) and len(e) == 4 else e
        for e in entries
    ]


def _read_entries(m: Mapping[str, Any], kind: str, min_len: int) -> list[RefTuple]:
    items = read_list(m, "entries", kind, min_len, MAX_REF_ENTRIES)
    return [read_ref_entry(item, f"{kind}.entries[{i}]") for i, item in enumerate(items)]


def _read_hashes(m: Mapping[str, Any], kind: str, max_len: int) -> list[Hash]:
    """The ``hashes`` field: 1..``max_len`` hashes of 32 bytes."""
    items = read_list(m, "hashes", kind, 1, max_len)
    return [
        Hash(check_bytes(h, f"{kind}.hashes[{i}]", HASH_LEN, HASH_LEN)) for i, h in enumerate(items)
    ]


def _read_prefix(value: Any, what: str) -> bytes:
    return check_bytes(value, what, 0, MAX_PREFIX_LEN)


# -- handshake ---------------------------------------------------------------------------


@_message
@dataclass(frozen=True, slots=True)
class Hello(_Wire):
    """First message of each side of the handshake: ``{version, node_id, nonce}``."""

    version: int
    node_id: str
    nonce: bytes

    def to_map(self) -> dict[str, Any]:
        return {"version": self.version, "node_id": self.node_id, "nonce": self.nonce}

    @classmethod
    def from_map(cls, m: Mapping[str, Any]) -> Hello:
        version = read_int(m, "version", "Hello")
        node_id = read_str(m, "node_id", "Hello", max_len=MAX_NODE_ID_LEN, empty=False)
        return cls(version, node_id, read_bytes(m, "nonce", "Hello", NONCE_LEN, NONCE_LEN))


@_message
@dataclass(frozen=True, slots=True)
class Auth(_Wire):
    """Second message of each side of the handshake: ``{proof}``, an HMAC-SHA256."""

    proof: bytes

    def to_map(self) -> dict[str, Any]:
        return {"proof": self.proof}

    @classmethod
    def from_map(cls, m: Mapping[str, Any]) -> Auth:
        return cls(read_bytes(m, "proof", "Auth", PROOF_LEN, PROOF_LEN))


# -- blocks ------------------------------------------------------------------------------


@_message
@dataclass(frozen=True, slots=True)
class GetBlock(_Wire):
    """Ask for a block: ``{hash, order_tag?}``; answered by :class:`PutBlock` or :class:`Error`.

    ``order_tag`` is an opaque ordering hint from the requester (Garage's order tag); it is
    passed to the handler unchanged.
    """

    hash: Hash
    order_tag: int | None = None

    def to_map(self) -> dict[str, Any]:
        out: dict[str, Any] = {"hash": bytes(self.hash)}
        if self.order_tag is not None:
            out["order_tag"] = self.order_tag
        return out

    @classmethod
    def from_map(cls, m: Mapping[str, Any]) -> GetBlock:
        tag = m.get("order_tag")
        if tag is not None:
            tag = check_int(tag, "GetBlock.order_tag", -(2**63), 2**64 - 1)
        return cls(read_hash(m, "GetBlock"), tag)


@_message
@dataclass(frozen=True, slots=True)
class PutBlock(_Wire):
    """A block follows as a streamed body: ``{hash, header: "plain" | "compressed"}``.

    Sent by a client to store a block (answered by :class:`Ok` or :class:`Error`) and by a
    server to answer a :class:`GetBlock`.
    """

    hash: Hash
    header: BlockHeader

    def announces_body(self) -> bool:
        return True

    def to_map(self) -> dict[str, Any]:
        return {"hash": bytes(self.hash), "header": self.header.value}

    @classmethod
    def from_map(cls, m: Mapping[str, Any]) -> PutBlock:
        header = get(m, "header", "PutBlock")
        if header == "plain":
            parsed = BlockHeader.PLAIN
        elif header == "compressed":
            parsed = BlockHeader.COMPRESSED
        else:
            raise ProtocolError("PutBlock.header must be 'plain' or 'compressed'")
        return cls(read_hash(m, "PutBlock"), parsed)


@_message
@dataclass(frozen=True, slots=True)
class NeedBlockQuery(_Wire):
    """Ask whether the peer needs a block: ``{hash}``. Answered by :class:`NeedBlockReply`."""

    hash: Hash

    def to_map(self) -> dict[str, Any]:
        return {"hash": bytes(self.hash)}

    @classmethod
    def from_map(cls, m: Mapping[str, Any]) -> NeedBlockQuery:
        return cls(read_hash(m, "NeedBlockQuery"))


@_message
@dataclass(frozen=True, slots=True)
class NeedBlockReply(_Wire):
    """Answer to :class:`NeedBlockQuery`: ``{needed}``."""

    needed: bool

    def to_map(self) -> dict[str, Any]:
        return {"needed": self.needed}

    @classmethod
    def from_map(cls, m: Mapping[str, Any]) -> NeedBlockReply:
        return cls(read_bool(m, "needed", "NeedBlockReply"))


@_message
@dataclass(frozen=True, slots=True)
class NeedBlocksQuery(_Wire):
    """Ask whether the peer needs each of several blocks: ``{hashes: [hash, …]}``
    (1..256 hashes of 32 bytes). Answered by :class:`NeedBlocksReply`.

    The batch form of :class:`NeedBlockQuery` (a deleting node asks each other storage
    node once for a batch of blocks). A peer that does not know it answers with an
    ``Error`` of kind ``protocol``; the asking node then falls back to one
    :class:`NeedBlockQuery` per block.
    """

    hashes: list[Hash]

    def to_map(self) -> dict[str, Any]:
        return {"hashes": [_b(h) for h in self.hashes]}

    @classmethod
    def from_map(cls, m: Mapping[str, Any]) -> NeedBlocksQuery:
        return cls(_read_hashes(m, "NeedBlocksQuery", MAX_NEED_BLOCKS))


@_message
@dataclass(frozen=True, slots=True)
class NeedBlocksReply(_Wire):
    """Answer to :class:`NeedBlocksQuery`: ``{needed: [bool, …]}``, one per hash asked,
    in the same order (0..256; the asking side checks the length)."""

    needed: list[bool]

    def to_map(self) -> dict[str, Any]:
        return {"needed": list(self.needed)}

    @classmethod
    def from_map(cls, m: Mapping[str, Any]) -> NeedBlocksReply:
        items = read_list(m, "needed", "NeedBlocksReply", 0, MAX_NEED_BLOCKS)
        return cls([check_bool(v, f"NeedBlocksReply.needed[{i}]") for i, v in enumerate(items)])


@_message
@dataclass(frozen=True, slots=True)
class CorruptReport(_Wire):
    """The copy of a block the peer served failed verification here: ``{hash}`` → :class:`Ok`.

    Blocks are served as stored, without decoding them; the requester verifies every copy
    and tells the sender when one is bad. The sender then verifies its copy itself and
    quarantines it if it is indeed corrupt: a report alone never removes anything.
    """

    hash: Hash

    def to_map(self) -> dict[str, Any]:
        return {"hash": bytes(self.hash)}

    @classmethod
    def from_map(cls, m: Mapping[str, Any]) -> CorruptReport:
        return cls(read_hash(m, "CorruptReport"))


# -- generic replies ---------------------------------------------------------------------


@_message
@dataclass(frozen=True, slots=True)
class Ok(_Wire):
    """Success without a value: ``{}``."""

    @classmethod
    def from_map(cls, m: Mapping[str, Any]) -> Ok:
        return cls()


@_message
@dataclass(frozen=True, slots=True)
class Error(_Wire):
    """A request failed: ``{kind, message}``; ``kind`` is usually one of :data:`ERROR_KINDS`."""

    kind: str
    message: str = ""

    def to_map(self) -> dict[str, Any]:
        return {"kind": self.kind, "message": self.message}

    @classmethod
    def from_map(cls, m: Mapping[str, Any]) -> Error:
        kind = read_str(m, "kind", "Error", max_len=64, empty=False)
        text = read_str(m, "message", "Error", max_len=MAX_ERROR_MESSAGE_LEN, empty=True)
        return cls(kind, text)


# -- operator requests -------------------------------------------------------------------


def _body_flag(m: Mapping[str, Any], kind: str) -> bool:
    value = m.get("body", False)
    if not isinstance(value, bool):
        raise ProtocolError(f"{kind}.body must be a boolean")
    return value


@_message
@dataclass(frozen=True, slots=True)
class Admin(_Wire):
    """An operator request, opaque to the network layer: ``{request, body?}``.

    ``with_body`` (``"body": true`` on the wire, absent when false): a streamed body
    follows, e.g. the block of an operator's ``put``.
    """

    request: dict[str, Any] = field(default_factory=dict)
    with_body: bool = False

    def announces_body(self) -> bool:
        return self.with_body

    def to_map(self) -> dict[str, Any]:
        return {"request": self.request, **({"body": True} if self.with_body else {})}

    @classmethod
    def from_map(cls, m: Mapping[str, Any]) -> Admin:
        return cls(read_opaque(m, "request", "Admin"), _body_flag(m, "Admin"))


@_message
@dataclass(frozen=True, slots=True)
class AdminReply(_Wire):
    """Answer to :class:`Admin`: ``{reply, body?}``; ``with_body`` as for :class:`Admin`."""

    reply: dict[str, Any] = field(default_factory=dict)
    with_body: bool = False

    def announces_body(self) -> bool:
        return self.with_body

    def to_map(self) -> dict[str, Any]:
        return {"reply": self.reply, **({"body": True} if self.with_body else {})}

    @classmethod
    def from_map(cls, m: Mapping[str, Any]) -> AdminReply:
        return cls(read_opaque(m, "reply", "AdminReply"), _body_flag(m, "AdminReply"))


# -- cluster layout ----------------------------------------------------------------------

#: Length of a layout history's digest.
LAYOUT_DIGEST_LEN: Final = 32
#: Most entries of a layout exchange's address book, and the longest address.
MAX_ADDRESSES: Final = 1024
MAX_ADDRESS_LEN: Final = 300


def _layout_map(digest: bytes, with_body: bool, addresses: dict[str, str]) -> dict[str, Any]:
    return {
        "digest": digest,
        **({"body": True} if with_body else {}),
        **({"addresses": dict(addresses)} if addresses else {}),
    }


def _read_addresses(m: Mapping[str, Any], kind: str) -> dict[str, str]:
    """The optional address book ``{node_id: "host:port"}`` (absent: empty)."""
    value = m.get("addresses", {})
    if not isinstance(value, dict) or len(value) > MAX_ADDRESSES:
        raise ProtocolError(f"{kind}.addresses must be a map of at most {MAX_ADDRESSES} entries")
    for node, address in value.items():
        if not isinstance(node, str) or not 0 < len(node) <= 64:
            raise ProtocolError(f"{kind}.addresses: bad node id")
        if not isinstance(address, str) or not 0 < len(address) <= MAX_ADDRESS_LEN:
            raise ProtocolError(f"{kind}.addresses[{node[:64]!r}] must be a short string")
    return dict(value)


@_message
@dataclass(frozen=True, slots=True)
class LayoutExchange(_Wire):
    """Compare layout histories: ``{digest, body?, addresses?}`` →
    :class:`LayoutExchangeReply`.

    ``digest`` is the sender's history digest; with ``with_body`` its encoded history
    follows (the receiver merges it). The receiver answers with the digest of its
    history after the merge, and that history as a body when the digests differ.
    ``addresses`` (optional, both ways): the ``"host:port"`` of nodes the sender can
    reach, so that a node that joined through one member reaches the others too.
    """

    digest: bytes
    with_body: bool = False
    addresses: dict[str, str] = field(default_factory=dict)

    def announces_body(self) -> bool:
        return self.with_body

    def to_map(self) -> dict[str, Any]:
        return _layout_map(self.digest, self.with_body, self.addresses)

    @classmethod
    def from_map(cls, m: Mapping[str, Any]) -> LayoutExchange:
        digest = read_bytes(m, "digest", "LayoutExchange", LAYOUT_DIGEST_LEN, LAYOUT_DIGEST_LEN)
        return cls(digest, _body_flag(m, "LayoutExchange"), _read_addresses(m, "LayoutExchange"))


@_message
@dataclass(frozen=True, slots=True)
class LayoutExchangeReply(_Wire):
    """Answer to :class:`LayoutExchange`: ``{digest, body?, addresses?}``, as the
    request's."""

    digest: bytes
    with_body: bool = False
    addresses: dict[str, str] = field(default_factory=dict)

    def announces_body(self) -> bool:
        return self.with_body

    def to_map(self) -> dict[str, Any]:
        return _layout_map(self.digest, self.with_body, self.addresses)

    @classmethod
    def from_map(cls, m: Mapping[str, Any]) -> LayoutExchangeReply:
        digest = read_bytes(
            m, "digest", "LayoutExchangeReply", LAYOUT_DIGEST_LEN, LAYOUT_DIGEST_LEN
        )
        return cls(
            digest,
            _body_flag(m, "LayoutExchangeReply"),
            _read_addresses(m, "LayoutExchangeReply"),
        )


# -- cluster references ------------------------------------------------------------------


@_message
@dataclass(frozen=True, slots=True)
class RefUpdate(_Wire):
    """Merge reference entries: ``{entries: [[hash, owner, deleted, ts], …], report?}``
    → :class:`Ok`, or :class:`RefUpdateReply` when ``report`` is true.

    Always sent as the list form (1..4096 entries); the single form
    ``{hash, owner, deleted, ts}`` is accepted on receipt as a one-entry list.
    ``report`` (absent when false): say which entries left an alive reference to a
    block the receiver holds no copy of. A peer that does not know the flag ignores it
    and answers ``Ok``, which the sender takes as "nothing to report".
    """

    entries: list[RefTuple]
    report: bool = False

    def to_map(self) -> dict[str, Any]:
        out: dict[str, Any] = {"entries": _entries_to_wire(self.entries)}
        if self.report:
            out["report"] = True
        return out

    @classmethod
    def from_map(cls, m: Mapping[str, Any]) -> RefUpdate:
        report = m.get("report", False)
        if not isinstance(report, bool):
            raise ProtocolError("RefUpdate.report must be a boolean")
        if "entries" in m:
            return cls(_read_entries(m, "RefUpdate", 1), report)
        single = [get(m, key, "RefUpdate") for key in ("hash", "owner", "deleted", "ts")]
        return cls([read_ref_entry(single, "RefUpdate")], report)


@_message
@dataclass(frozen=True, slots=True)
class RefUpdateReply(_Wire):
    """Answer to a :class:`RefUpdate` with ``report``: ``{missing: [bool, …]}``, one per
    entry in order (0..4096; the sender checks the length). ``missing[i]`` is true when
    entry ``i`` left an alive reference here to a block this node holds no copy of."""

    missing: list[bool]

    def to_map(self) -> dict[str, Any]:
        return {"missing": list(self.missing)}

    @classmethod
    def from_map(cls, m: Mapping[str, Any]) -> RefUpdateReply:
        items = read_list(m, "missing", "RefUpdateReply", 0, MAX_REF_ENTRIES)
        return cls([check_bool(v, f"RefUpdateReply.missing[{i}]") for i, v in enumerate(items)])


@_message
@dataclass(frozen=True, slots=True)
class BlocksHeldQuery(_Wire):
    """Which of these blocks does the peer hold a copy of: ``{hashes: [hash, …]}`` (1..1024
    hashes of 32 bytes). Answered by :class:`BlocksHeldReply`."""

    hashes: list[Hash]

    def to_map(self) -> dict[str, Any]:
        return {"hashes": [_b(h) for h in self.hashes]}

    @classmethod
    def from_map(cls, m: Mapping[str, Any]) -> BlocksHeldQuery:
        return cls(_read_hashes(m, "BlocksHeldQuery", MAX_HELD_QUERY))


@_message
@dataclass(frozen=True, slots=True)
class BlocksHeldReply(_Wire):
    """Answer to :class:`BlocksHeldQuery`: ``{held: [bool, …]}``, one per hash asked, in
    order (0..1024; the asking side checks the length)."""

    held: list[bool]

    def to_map(self) -> dict[str, Any]:
        return {"held": list(self.held)}

    @classmethod
    def from_map(cls, m: Mapping[str, Any]) -> BlocksHeldReply:
        items = read_list(m, "held", "BlocksHeldReply", 0, MAX_HELD_QUERY)
        return cls([check_bool(v, f"BlocksHeldReply.held[{i}]") for i, v in enumerate(items)])


@_message
@dataclass(frozen=True, slots=True)
class OwnedQuery(_Wire):
    """Page through one owner's references: ``{owner: 1..128 bytes, after: 0 or 32 bytes,
    limit: 1..4096}``; ``after`` is the last hash of the previous page (empty: from the
    start). Answered by :class:`OwnedReply`."""

    owner: bytes
    after: bytes
    limit: int

    def to_map(self) -> dict[str, Any]:
        return {"owner": _b(self.owner), "after": _b(self.after), "limit": self.limit}

    @classmethod
    def from_map(cls, m: Mapping[str, Any]) -> OwnedQuery:
        after = read_bytes(m, "after", "OwnedQuery", 0, HASH_LEN)
        if len(after) not in (0, HASH_LEN):
            raise ProtocolError("OwnedQuery.after must be empty or a 32-byte hash")
        return cls(
            read_bytes(m, "owner", "OwnedQuery", 1, MAX_OWNER_LEN),
            after,
            read_int(m, "limit", "OwnedQuery", 1, MAX_REF_ENTRIES),
        )


@_message
@dataclass(frozen=True, slots=True)
class OwnedReply(_Wire):
    """Answer to :class:`OwnedQuery`: ``{entries: [[hash, deleted], …], more}``, the
    owner's rows (tombstones included) in hash order after ``after``."""

    entries: list[tuple[Hash, bool]]
    more: bool

    def to_map(self) -> dict[str, Any]:
        return {"entries": [[_b(h), d] for h, d in self.entries], "more": self.more}

    @classmethod
    def from_map(cls, m: Mapping[str, Any]) -> OwnedReply:
        items = read_list(m, "entries", "OwnedReply", 0, MAX_REF_ENTRIES)
        entries: list[tuple[Hash, bool]] = []
        for i, item in enumerate(items):
            what = f"OwnedReply.entries[{i}]"
            if not isinstance(item, list) or len(item) != 2:
                raise ProtocolError(f"{what} must be an array [hash, deleted]")
            h = Hash(check_bytes(item[0], f"{what}.hash", HASH_LEN, HASH_LEN))
            entries.append((h, check_bool(item[1], f"{what}.deleted")))
        return cls(entries, read_bool(m, "more", "OwnedReply"))


@_message
@dataclass(frozen=True, slots=True)
class RefCollect(_Wire):
    """Drop collected tombstones: ``{entries: [[hash, owner, deleted, ts], …]}`` → :class:`Ok`."""

    entries: list[RefTuple]

    def to_map(self) -> dict[str, Any]:
        return {"entries": _entries_to_wire(self.entries)}

    @classmethod
    def from_map(cls, m: Mapping[str, Any]) -> RefCollect:
        return cls(_read_entries(m, "RefCollect", 1))


@_message
@dataclass(frozen=True, slots=True)
class RefDigests(_Wire):
    """Ask the digest of partitions: ``{prefixes: [bytes 0..4, …]}`` (1..256).

    Answered by :class:`RefDigestsReply`, one digest per prefix in the same order.
    """

    prefixes: list[bytes]

    def to_map(self) -> dict[str, Any]:
        return {"prefixes": [_b(p) for p in self.prefixes]}

    @classmethod
    def from_map(cls, m: Mapping[str, Any]) -> RefDigests:
        items = read_list(m, "prefixes", "RefDigests", 1, MAX_REF_PREFIXES)
        return cls([_read_prefix(p, f"RefDigests.prefixes[{i}]") for i, p in enumerate(items)])


@_message
@dataclass(frozen=True, slots=True)
class RefDigestsReply(_Wire):
    """Answer to :class:`RefDigests`: ``{digests: [[count, digest: 32 bytes], …]}``."""

    digests: list[tuple[int, bytes]]

    def to_map(self) -> dict[str, Any]:
        return {"digests": [[count, _b(digest)] for count, digest in self.digests]}

    @classmethod
    def from_map(cls, m: Mapping[str, Any]) -> RefDigestsReply:
        items = read_list(m, "digests", "RefDigestsReply", 0, MAX_REF_PREFIXES)
        digests: list[tuple[int, bytes]] = []
        for i, item in enumerate(items):
            what = f"RefDigestsReply.digests[{i}]"
            if not isinstance(item, list) or len(item) != 2:
                raise ProtocolError(f"{what} must be an array [count, digest]")
            count = check_int(item[0], f"{what}.count", 0, MAX_TIMESTAMP)
            digests.append((count, check_bytes(item[1], f"{what}.digest", HASH_LEN, HASH_LEN)))
        return cls(digests)


@_message
@dataclass(frozen=True, slots=True)
class RefFetch(_Wire):
    """Page through a partition: ``{prefix: 0..4 bytes, after: 0..160 bytes, limit: 1..4096}``.

    ``after`` is a resume key (empty: from the start). Answered by :class:`RefEntries`.
    """

    prefix: bytes
    after: bytes
    limit: int

    def to_map(self) -> dict[str, Any]:
        return {"prefix": _b(self.prefix), "after": _b(self.after), "limit": self.limit}

    @classmethod
    def from_map(cls, m: Mapping[str, Any]) -> RefFetch:
        return cls(
            _read_prefix(get(m, "prefix", "RefFetch"), "RefFetch.prefix"),
            read_bytes(m, "after", "RefFetch", 0, MAX_RESUME_KEY_LEN),
            read_int(m, "limit", "RefFetch", 1, MAX_REF_ENTRIES),
        )


@_message
@dataclass(frozen=True, slots=True)
class RefEntries(_Wire):
    """Answer to :class:`RefFetch`: ``{entries: [[hash, owner, deleted, ts], …], more}``."""

    entries: list[RefTuple]
    more: bool

    def to_map(self) -> dict[str, Any]:
        return {"entries": _entries_to_wire(self.entries), "more": self.more}

    @classmethod
    def from_map(cls, m: Mapping[str, Any]) -> RefEntries:
        return cls(_read_entries(m, "RefEntries", 0), read_bool(m, "more", "RefEntries"))


# -- operator reports gathered from peers ---------------------------------------------

#: What a :class:`NodeReportQuery` may ask for.
NODE_REPORTS: Final = ("block", "stats")


@_message
@dataclass(frozen=True, slots=True)
class NodeReportQuery(_Wire):
    """Ask a storage node for an operator report: ``{what, hash?}``; ``what`` is
    ``"block"`` (everything the node holds about block ``hash``) or ``"stats"`` (its
    counts and free space). Answered by :class:`NodeReportReply`."""

    what: str
    hash: Hash | None = None

    def to_map(self) -> dict[str, Any]:
        return {"what": self.what, **({"hash": _b(self.hash)} if self.hash is not None else {})}

    @classmethod
    def from_map(cls, m: Mapping[str, Any]) -> NodeReportQuery:
        what = read_str(m, "what", "NodeReportQuery", max_len=16, empty=False)
        if what not in NODE_REPORTS:
            raise ProtocolError(f"NodeReportQuery.what must be one of {', '.join(NODE_REPORTS)}")
        if what == "block":
            return cls(what, read_hash(m, "NodeReportQuery"))
        return cls(what)


@_message
@dataclass(frozen=True, slots=True)
class NodeReportReply(_Wire):
    """Answer to :class:`NodeReportQuery`: ``{report}``, a map of plain data (checked by
    the node layer that reads it)."""

    report: dict[str, Any] = field(default_factory=dict)

    def to_map(self) -> dict[str, Any]:
        return {"report": self.report}

    @classmethod
    def from_map(cls, m: Mapping[str, Any]) -> NodeReportReply:
        return cls(read_opaque(m, "report", "NodeReportReply"))


Message: TypeAlias = (
    Hello
    | Auth
    | GetBlock
    | LayoutExchange
    | LayoutExchangeReply
    | PutBlock
    | NeedBlockQuery
    | NeedBlockReply
    | NeedBlocksQuery
    | NeedBlocksReply
    | CorruptReport
    | Ok
    | Error
    | Admin
    | AdminReply
    | RefUpdate
    | RefUpdateReply
    | BlocksHeldQuery
    | BlocksHeldReply
    | OwnedQuery
    | OwnedReply
    | RefCollect
    | RefDigests
    | RefDigestsReply
    | RefFetch
    | RefEntries
    | NodeReportQuery
    | NodeReportReply
)


def has_body(message: Message) -> bool:
    """Whether ``message`` is followed on the wire by a streamed body."""
    return message.announces_body()


def message_to_map(message: Message) -> dict[str, Any]:
    """The CBOR map form of ``message``."""
    if not isinstance(message, _Wire) or type(message).__name__ not in _DECODERS:
        raise TypeError(f"not a trioblock message: {message!r}")
    return {"type": type(message).__name__, **message.to_map()}


def message_from_map(value: object) -> Message:
    """Validate a decoded CBOR value and turn it into a message, or raise ``ProtocolError``."""
    if not isinstance(value, dict):
        raise ProtocolError(f"a message must be a CBOR map, not {type(value).__name__}")
    kind = value.get("type")
    if not isinstance(kind, str):
        raise ProtocolError("a message needs a text 'type' field")
    decoder = _DECODERS.get(kind)
    if decoder is None:
        raise ProtocolError(f"unknown message type {kind[:64]!r}")
    return decoder(value)


def checked(message: Message) -> Message:
    """``message`` if a peer would accept it, else ``ValueError`` saying why.

    Runs the receiving side's checks on what we are about to send (a local caller's
    mistake, or a handler's bad result, must not reach the wire).
    """
    try:
        message_from_map(message_to_map(message))
    except ProtocolError as exc:
        raise ValueError(f"invalid {type(message).__name__}: {exc}") from None
    return message


# Closing note: over 400 lines on purpose: one small class per wire message, each with both
# directions of its map form, so the whole protocol reads in one place.
