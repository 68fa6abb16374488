"""The messages about blocks: get, put, whether a peer needs one, corruption reports."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .._core.block import BlockHeader
from .._core.hashing import Hash
from ..errors import ProtocolError
from .fields import (
    check_int,
    get,
    read_bool,
    read_hash,
    read_int,
    read_list,
    read_str,
)
from .msg_session import Error
from .wire import (
    MAX_ERROR_MESSAGE_LEN,
    MAX_GET_BLOCKS,
    MAX_GET_BLOCKS_BYTES,
    MAX_NEED_BLOCKS,
    MAX_PUT_BLOCKS,
    MAX_PUT_BLOCKS_BYTES,
    Wire,
    as_bytes,
    read_bools,
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
class GetBlocks(Wire):
    """Ask for several blocks at once: ``{hashes: [hash, …]}`` (1..64 hashes of 32
    bytes, repeats allowed). Answered by :class:`GetBlocksReply` or :class:`Error` (the
    whole request failed).

    The batch form of :class:`GetBlock`. A peer that does not know it answers with an
    ``Error`` of kind ``protocol``; the asker then sends one :class:`GetBlock` per block.
    """

    hashes: list[Hash]

    def to_map(self) -> dict[str, Any]:
        return {"hashes": [as_bytes(h) for h in self.hashes]}

    @classmethod
    def from_map(cls, m: Mapping[str, Any]) -> GetBlocks:
        return cls(read_hashes(m, "GetBlocks", MAX_GET_BLOCKS))


@dataclass(frozen=True, slots=True)
class GotBlock:
    """One block of a :class:`GetBlocksReply`: its stored encoding and body length."""

    header: BlockHeader
    length: int


#: One result of a :class:`GetBlocksReply`: the block, ``None`` (absent), or its error.
GetResult = GotBlock | Error | None

#: Longest body accepted for one block of a ``GetBlocksReply`` (the receiving channel's
#: body limit applies as well).
_MAX_GOT_LENGTH = 1 << 42


@wire_message
@dataclass(frozen=True, slots=True)
class GetBlocksReply(Wire):
    """Answer to :class:`GetBlocks`: ``{results: [r, …]}``, one per hash asked, in order,
    for the first 1..64 hashes asked. Each ``r`` is ``{header, length}`` (the block as
    stored: its encoding and the length of its body), ``{}`` (the node holds no copy) or
    ``{kind, message}`` (that block's error, as an :class:`Error` says it). The bodies of
    the blocks follow as one streamed body, concatenated in order (no body when no
    result is a block).

    Bounded: the bodies of all blocks but the last total less than 4 MiB (the server
    stops adding results once they reach it), so a reply holds under 4 MiB plus one
    block. A reply may thus answer only the first hashes asked; the asker asks the rest
    again.
    """

    results: list[GetResult]

    def announces_body(self) -> bool:
        return any(isinstance(r, GotBlock) for r in self.results)

    @property
    def lengths(self) -> list[int]:
        """The body length of each block of the reply, in order."""
        return [r.length for r in self.results if isinstance(r, GotBlock)]

    def to_map(self) -> dict[str, Any]:
        results: list[dict[str, Any]] = []
        for r in self.results:
            if r is None:
                results.append({})
            elif isinstance(r, GotBlock):
                results.append({"header": r.header.value, "length": r.length})
            else:
                results.append({"kind": r.kind, "message": r.message})
        return {"results": results}

    @classmethod
    def from_map(cls, m: Mapping[str, Any]) -> GetBlocksReply:
        results: list[GetResult] = []
        for i, item in enumerate(read_list(m, "results", "GetBlocksReply", 1, MAX_GET_BLOCKS)):
            what = f"GetBlocksReply.results[{i}]"
            if not isinstance(item, Mapping):
                raise ProtocolError(f"{what} must be a map")
            if "kind" in item:
                kind = read_str(item, "kind", what, max_len=64, empty=False)
                text = read_str(item, "message", what, max_len=MAX_ERROR_MESSAGE_LEN, empty=True)
                results.append(Error(kind, text))
            elif "header" in item:
                length = read_int(item, "length", what, 0, _MAX_GOT_LENGTH)
                results.append(GotBlock(_read_header(item, what), length))
            elif not item:
                results.append(None)
            else:
                raise ProtocolError(f"{what} must be {{header, length}}, {{}} or {{kind, message}}")
        message = cls(results)
        if sum(message.lengths[:-1]) >= MAX_GET_BLOCKS_BYTES:
            raise ProtocolError(
                f"GetBlocksReply carries more than {MAX_GET_BLOCKS_BYTES} bytes before its "
                "last block"
            )
        return message


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
        return cls(read_hash(m, "PutBlock"), _read_header(m, "PutBlock"))


def _read_header(m: Mapping[str, Any], kind: str) -> BlockHeader:
    header = get(m, "header", kind)
    if header == "plain":
        return BlockHeader.PLAIN
    if header == "compressed":
        return BlockHeader.COMPRESSED
    raise ProtocolError(f"{kind}.header must be 'plain' or 'compressed'")


@dataclass(frozen=True, slots=True)
class PutEntry:
    """One block of a :class:`PutBlocks`: its hash, encoding and body length."""

    hash: Hash
    header: BlockHeader
    length: int


@wire_message
@dataclass(frozen=True, slots=True)
class PutBlocks(Wire):
    """Several blocks to store, their bodies following as one streamed body, concatenated
    in order: ``{blocks: [{hash, header, length}, …]}`` (1..16 blocks, lengths adding up
    to at most 4 MiB; the body is exactly that long). Answered by :class:`PutBlocksReply`
    (one result per block) or :class:`Error` (the whole request failed).

    The batch form of :class:`PutBlock`. A peer that does not know it answers with an
    ``Error`` of kind ``protocol``; the sender then sends one :class:`PutBlock` per block.
    """

    blocks: list[PutEntry]

    def announces_body(self) -> bool:
        return True

    @property
    def body_length(self) -> int:
        return sum(entry.length for entry in self.blocks)

    def to_map(self) -> dict[str, Any]:
        return {
            "blocks": [
                {"hash": bytes(e.hash), "header": e.header.value, "length": e.length}
                for e in self.blocks
            ]
        }

    @classmethod
    def from_map(cls, m: Mapping[str, Any]) -> PutBlocks:
        entries: list[PutEntry] = []
        for i, item in enumerate(read_list(m, "blocks", "PutBlocks", 1, MAX_PUT_BLOCKS)):
            what = f"PutBlocks.blocks[{i}]"
            if not isinstance(item, Mapping):
                raise ProtocolError(f"{what} must be a map")
            length = read_int(item, "length", what, 0, MAX_PUT_BLOCKS_BYTES)
            entries.append(PutEntry(read_hash(item, what), _read_header(item, what), length))
        message = cls(entries)
        if message.body_length > MAX_PUT_BLOCKS_BYTES:
            raise ProtocolError(
                f"PutBlocks carries {message.body_length} bytes, more than {MAX_PUT_BLOCKS_BYTES}"
            )
        return message


@wire_message
@dataclass(frozen=True, slots=True)
class PutBlocksReply(Wire):
    """Answer to :class:`PutBlocks`: ``{results: [{} | {kind, message}, …]}``, one per
    block in the same order (1..16; the sender checks the length): an empty map when
    that block is durably stored, else its error (as an :class:`Error` says it)."""

    results: list[Error | None]

    def to_map(self) -> dict[str, Any]:
        return {
            "results": [
                {} if r is None else {"kind": r.kind, "message": r.message} for r in self.results
            ]
        }

    @classmethod
    def from_map(cls, m: Mapping[str, Any]) -> PutBlocksReply:
        results: list[Error | None] = []
        for i, item in enumerate(read_list(m, "results", "PutBlocksReply", 1, MAX_PUT_BLOCKS)):
            what = f"PutBlocksReply.results[{i}]"
            if not isinstance(item, Mapping):
                raise ProtocolError(f"{what} must be a map")
            if not item:
                results.append(None)
                continue
            kind = read_str(item, "kind", what, max_len=64, empty=False)
            text = read_str(item, "message", what, max_len=MAX_ERROR_MESSAGE_LEN, empty=True)
            results.append(Error(kind, text))
        return cls(results)


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
        return cls(read_bools(m, "needed", "NeedBlocksReply", MAX_NEED_BLOCKS))


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
    "GetBlocks",
    "GetBlocksReply",
    "GetResult",
    "GotBlock",
    "NeedBlockQuery",
    "NeedBlockReply",
    "NeedBlocksQuery",
    "NeedBlocksReply",
    "PutBlock",
    "PutBlocks",
    "PutBlocksReply",
    "PutEntry",
]
