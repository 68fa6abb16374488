"""The messages about blocks: get, put, whether a peer needs one, corruption reports."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .._core.block import BlockHeader
from .._core.hashing import Hash
from ..errors import ProtocolError
from .fields import (
    check_bool,
    check_int,
    get,
    read_bool,
    read_hash,
    read_list,
)
from .wire import (
    MAX_NEED_BLOCKS,
    Wire,
    as_bytes,
    read_hashes,
    wire_message,
)

# -- blocks ------------------------------------------------------------------------------


@wire_message
@dataclass(frozen=True, slots=True)
class GetBlock(Wire):
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


@wire_message
@dataclass(frozen=True, slots=True)
class PutBlock(Wire):
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


@wire_message
@dataclass(frozen=True, slots=True)
class NeedBlockQuery(Wire):
    """Ask whether the peer needs a block: ``{hash}``. Answered by :class:`NeedBlockReply`."""

    hash: Hash

    def to_map(self) -> dict[str, Any]:
        return {"hash": bytes(self.hash)}

    @classmethod
    def from_map(cls, m: Mapping[str, Any]) -> NeedBlockQuery:
        return cls(read_hash(m, "NeedBlockQuery"))


@wire_message
@dataclass(frozen=True, slots=True)
class NeedBlockReply(Wire):
    """Answer to :class:`NeedBlockQuery`: ``{needed}``."""

    needed: bool

    def to_map(self) -> dict[str, Any]:
        return {"needed": self.needed}

    @classmethod
    def from_map(cls, m: Mapping[str, Any]) -> NeedBlockReply:
        return cls(read_bool(m, "needed", "NeedBlockReply"))


@wire_message
@dataclass(frozen=True, slots=True)
class NeedBlocksQuery(Wire):
    """Ask whether the peer needs each of several blocks: ``{hashes: [hash, …]}``
    (1..256 hashes of 32 bytes). Answered by :class:`NeedBlocksReply`.

    The batch form of :class:`NeedBlockQuery` (a deleting node asks each other storage
    node once for a batch of blocks). A peer that does not know it answers with an
    ``Error`` of kind ``protocol``; the asking node then falls back to one
    :class:`NeedBlockQuery` per block.
    """

    hashes: list[Hash]

    def to_map(self) -> dict[str, Any]:
        return {"hashes": [as_bytes(h) for h in self.hashes]}

    @classmethod
    def from_map(cls, m: Mapping[str, Any]) -> NeedBlocksQuery:
        return cls(read_hashes(m, "NeedBlocksQuery", MAX_NEED_BLOCKS))


@wire_message
@dataclass(frozen=True, slots=True)
class NeedBlocksReply(Wire):
    """Answer to :class:`NeedBlocksQuery`: ``{needed: [bool, …]}``, one per hash asked,
    in the same order (0..256; the asking side checks the length)."""

    needed: list[bool]

    def to_map(self) -> dict[str, Any]:
        return {"needed": list(self.needed)}

    @classmethod
    def from_map(cls, m: Mapping[str, Any]) -> NeedBlocksReply:
        items = read_list(m, "needed", "NeedBlocksReply", 0, MAX_NEED_BLOCKS)
        return cls([check_bool(v, f"NeedBlocksReply.needed[{i}]") for i, v in enumerate(items)])


@wire_message
@dataclass(frozen=True, slots=True)
class CorruptReport(Wire):
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


__all__ = [
    "CorruptReport",
    "GetBlock",
    "NeedBlockQuery",
    "NeedBlockReply",
    "NeedBlocksQuery",
    "NeedBlocksReply",
    "PutBlock",
]
