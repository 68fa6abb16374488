"""The messages about cluster references: updates, queries, anti-entropy digests and pages."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .._core.hashing import HASH_LEN, Hash
from .._core.refcrdt import MAX_OWNER_LEN
from ..errors import ProtocolError
from .fields import (
    MAX_TS,
    RefTuple,
    check_bool,
    check_bytes,
    check_int,
    get,
    read_bool,
    read_bytes,
    read_int,
    read_list,
    read_ref_entry,
)
from .wire import (
    MAX_HELD_QUERY,
    MAX_REF_ENTRIES,
    MAX_REF_PREFIXES,
    MAX_RESUME_KEY_LEN,
    Wire,
    as_bytes,
    entries_to_wire,
    read_bools,
    read_entries,
    read_hashes,
    read_prefix,
    wire_message,
)

# -- cluster references ------------------------------------------------------------------


@wire_message
@dataclass(frozen=True, slots=True)
class RefUpdate(Wire):
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
        out: dict[str, Any] = {"entries": entries_to_wire(self.entries)}
        if self.report:
            out["report"] = True
        return out

    @classmethod
    def from_map(cls, m: Mapping[str, Any]) -> RefUpdate:
        report = m.get("report", False)
        if not isinstance(report, bool):
            raise ProtocolError("RefUpdate.report must be a boolean")
        if "entries" in m:
            return cls(read_entries(m, "RefUpdate", 1), report)
        single = [get(m, key, "RefUpdate") for key in ("hash", "owner", "deleted", "ts")]
        return cls([read_ref_entry(single, "RefUpdate")], report)


@wire_message
@dataclass(frozen=True, slots=True)
class RefUpdateReply(Wire):
    """Answer to a :class:`RefUpdate` with ``report``: ``{missing: [bool, …]}``, one per
    entry in order (0..4096; the sender checks the length). ``missing[i]`` is true when
    entry ``i`` left an alive reference here to a block this node holds no copy of."""

    missing: list[bool]

    def to_map(self) -> dict[str, Any]:
        return {"missing": list(self.missing)}

    @classmethod
    def from_map(cls, m: Mapping[str, Any]) -> RefUpdateReply:
        return cls(read_bools(m, "missing", "RefUpdateReply", MAX_REF_ENTRIES))


@wire_message
@dataclass(frozen=True, slots=True)
class BlocksHeldQuery(Wire):
    """Which of these blocks does the peer hold a copy of: ``{hashes: [hash, …]}`` (1..1024
    hashes of 32 bytes). Answered by :class:`BlocksHeldReply`."""

    hashes: list[Hash]

    def to_map(self) -> dict[str, Any]:
        return {"hashes": [as_bytes(h) for h in self.hashes]}

    @classmethod
    def from_map(cls, m: Mapping[str, Any]) -> BlocksHeldQuery:
        return cls(read_hashes(m, "BlocksHeldQuery", MAX_HELD_QUERY))


@wire_message
@dataclass(frozen=True, slots=True)
class BlocksHeldReply(Wire):
    """Answer to :class:`BlocksHeldQuery`: ``{held: [bool, …]}``, one per hash asked, in
    order (0..1024; the asking side checks the length)."""

    held: list[bool]

    def to_map(self) -> dict[str, Any]:
        return {"held": list(self.held)}

    @classmethod
    def from_map(cls, m: Mapping[str, Any]) -> BlocksHeldReply:
        return cls(read_bools(m, "held", "BlocksHeldReply", MAX_HELD_QUERY))


@wire_message
@dataclass(frozen=True, slots=True)
class OwnedQuery(Wire):
    """Page through one owner's references: ``{owner: 1..128 bytes, after: 0 or 32 bytes,
    limit: 1..4096}``; ``after`` is the last hash of the previous page (empty: from the
    start). Answered by :class:`OwnedReply`."""

    owner: bytes
    after: bytes
    limit: int

    def to_map(self) -> dict[str, Any]:
        return {"owner": as_bytes(self.owner), "after": as_bytes(self.after), "limit": self.limit}

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


@wire_message
@dataclass(frozen=True, slots=True)
class OwnedReply(Wire):
    """Answer to :class:`OwnedQuery`: ``{entries: [[hash, deleted], …], more}``, the
    owner's rows (tombstones included) in hash order after ``after``."""

    entries: list[tuple[Hash, bool]]
    more: bool

    def to_map(self) -> dict[str, Any]:
        return {"entries": [[as_bytes(h), d] for h, d in self.entries], "more": self.more}

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


@wire_message
@dataclass(frozen=True, slots=True)
class RefCollect(Wire):
    """Drop collected tombstones: ``{entries: [[hash, owner, deleted, ts], …]}`` → :class:`Ok`."""

    entries: list[RefTuple]

    def to_map(self) -> dict[str, Any]:
        return {"entries": entries_to_wire(self.entries)}

    @classmethod
    def from_map(cls, m: Mapping[str, Any]) -> RefCollect:
        return cls(read_entries(m, "RefCollect", 1))


@wire_message
@dataclass(frozen=True, slots=True)
class RefDigests(Wire):
    """Ask the digest of partitions: ``{prefixes: [bytes 0..4, …]}`` (1..256).

    Answered by :class:`RefDigestsReply`, one digest per prefix in the same order.
    """

    prefixes: list[bytes]

    def to_map(self) -> dict[str, Any]:
        return {"prefixes": [as_bytes(p) for p in self.prefixes]}

    @classmethod
    def from_map(cls, m: Mapping[str, Any]) -> RefDigests:
        items = read_list(m, "prefixes", "RefDigests", 1, MAX_REF_PREFIXES)
        return cls([read_prefix(p, f"RefDigests.prefixes[{i}]") for i, p in enumerate(items)])


@wire_message
@dataclass(frozen=True, slots=True)
class RefDigestsReply(Wire):
    """Answer to :class:`RefDigests`: ``{digests: [[count, digest: 32 bytes], …]}``."""

    digests: list[tuple[int, bytes]]

    def to_map(self) -> dict[str, Any]:
        return {"digests": [[count, as_bytes(digest)] for count, digest in self.digests]}

    @classmethod
    def from_map(cls, m: Mapping[str, Any]) -> RefDigestsReply:
        items = read_list(m, "digests", "RefDigestsReply", 0, MAX_REF_PREFIXES)
        digests: list[tuple[int, bytes]] = []
        for i, item in enumerate(items):
            what = f"RefDigestsReply.digests[{i}]"
            if not isinstance(item, list) or len(item) != 2:
                raise ProtocolError(f"{what} must be an array [count, digest]")
            count = check_int(item[0], f"{what}.count", 0, MAX_TS)
            digests.append((count, check_bytes(item[1], f"{what}.digest", HASH_LEN, HASH_LEN)))
        return cls(digests)


@wire_message
@dataclass(frozen=True, slots=True)
class RefFetch(Wire):
    """Page through a partition: ``{prefix: 0..4 bytes, after: 0..160 bytes, limit: 1..4096}``.

    ``after`` is a resume key (empty: from the start). Answered by :class:`RefEntries`.
    """

    prefix: bytes
    after: bytes
    limit: int

    def to_map(self) -> dict[str, Any]:
        return {"prefix": as_bytes(self.prefix), "after": as_bytes(self.after), "limit": self.limit}

    @classmethod
    def from_map(cls, m: Mapping[str, Any]) -> RefFetch:
        return cls(
            read_prefix(get(m, "prefix", "RefFetch"), "RefFetch.prefix"),
            read_bytes(m, "after", "RefFetch", 0, MAX_RESUME_KEY_LEN),
            read_int(m, "limit", "RefFetch", 1, MAX_REF_ENTRIES),
        )


@wire_message
@dataclass(frozen=True, slots=True)
class RefEntries(Wire):
    """Answer to :class:`RefFetch`: ``{entries: [[hash, owner, deleted, ts], …], more}``."""

    entries: list[RefTuple]
    more: bool

    def to_map(self) -> dict[str, Any]:
        return {"entries": entries_to_wire(self.entries), "more": self.more}

    @classmethod
    def from_map(cls, m: Mapping[str, Any]) -> RefEntries:
        return cls(read_entries(m, "RefEntries", 0), read_bool(m, "more", "RefEntries"))


__all__ = [
    "BlocksHeldQuery",
    "BlocksHeldReply",
    "OwnedQuery",
    "OwnedReply",
    "RefCollect",
    "RefDigests",
    "RefDigestsReply",
    "RefEntries",
    "RefFetch",
    "RefUpdate",
    "RefUpdateReply",
]
