"""The messages of trioblock's wire protocol, and their CBOR map form.

Rules kept here:

- A message is a frozen dataclass; on the wire it is one CBOR map whose ``"type"`` key is
  the class name and whose other keys are its fields. Each class holds both directions of
  its own map form (``to_map`` and ``from_map``), so a new message is one class (in the
  ``msg_*`` module of its kind; this module gathers them). This
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
  per hash, in order. :class:`PutBlocks` stores 1..16 blocks (at most 4 MiB of bodies,
  concatenated in one body); its reply holds one result per block, in order.
  :class:`GetBlocks` asks for 1..64 blocks; its reply holds one result per hash (the
  block as stored, absent, or an error) for the first hashes asked, the blocks' bodies
  concatenated in one body of under 4 MiB plus one block.
- For applications: :class:`RefUpdate` may ask (``"report": true``) which of its alive
  entries reference a block the receiver holds no copy of, answered by
  :class:`RefUpdateReply` (an older peer ignores the flag and answers ``Ok``);
  :class:`BlocksHeldQuery` asks which of 1..1024 blocks the peer holds a copy of;
  :class:`OwnedQuery` pages through the references of one owner.
- :class:`LayoutExchange` compares two nodes' layout histories by digest; a history
  travels as the message's body (its own CBOR encoding, checked by the layout code), so
  it is bounded by the body limit, not the message-frame limit.
- :class:`NodeReportQuery` asks a storage node for an operator's report (a block's
  view, or its stats), answered by :class:`NodeReportReply` with a map of plain data.
"""

from __future__ import annotations

from typing import Any, TypeAlias

from ..errors import ProtocolError
from .fields import (
    MAX_OPAQUE_DEPTH,
    RefTuple,
)
from .msg_blocks import (
    CorruptReport,
    GetBlock,
    GetBlocks,
    GetBlocksReply,
    GetResult,
    GotBlock,
    NeedBlockQuery,
    NeedBlockReply,
    NeedBlocksQuery,
    NeedBlocksReply,
    PutBlock,
    PutBlocks,
    PutBlocksReply,
    PutEntry,
)
from .msg_layout import (
    LayoutExchange,
    LayoutExchangeReply,
)
from .msg_refs import (
    BlocksHeldQuery,
    BlocksHeldReply,
    OwnedQuery,
    OwnedReply,
    RefCollect,
    RefDigests,
    RefDigestsReply,
    RefEntries,
    RefFetch,
    RefUpdate,
    RefUpdateReply,
)
from .msg_reports import NODE_REPORTS, NodeReportQuery, NodeReportReply
from .msg_session import (
    Admin,
    AdminReply,
    Auth,
    Error,
    Hello,
    Ok,
)
from .wire import (
    DECODERS,
    ERROR_KINDS,
    MAX_ERROR_MESSAGE_LEN,
    MAX_GET_BLOCKS,
    MAX_GET_BLOCKS_BYTES,
    MAX_HELD_QUERY,
    MAX_NEED_BLOCKS,
    MAX_PREFIX_LEN,
    MAX_PUT_BLOCKS,
    MAX_PUT_BLOCKS_BYTES,
    MAX_REF_ENTRIES,
    MAX_REF_PREFIXES,
    MAX_RESUME_KEY_LEN,
    NONCE_LEN,
    PROTOCOL_VERSION,
    Wire,
)

__all__ = [
    "ERROR_KINDS",
    "MAX_ERROR_MESSAGE_LEN",
    "MAX_GET_BLOCKS",
    "MAX_GET_BLOCKS_BYTES",
    "MAX_HELD_QUERY",
    "MAX_NEED_BLOCKS",
    "MAX_OPAQUE_DEPTH",
    "MAX_PREFIX_LEN",
    "MAX_PUT_BLOCKS",
    "MAX_PUT_BLOCKS_BYTES",
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
    "GetBlocks",
    "GetBlocksReply",
    "GetResult",
    "GotBlock",
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
    "PutBlocks",
    "PutBlocksReply",
    "PutEntry",
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

Message: TypeAlias = (
    Hello
    | Auth
    | GetBlock
    | GetBlocks
    | GetBlocksReply
    | LayoutExchange
    | LayoutExchangeReply
    | PutBlock
    | PutBlocks
    | PutBlocksReply
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
    if not isinstance(message, Wire) or type(message).__name__ not in DECODERS:
        raise TypeError(f"not a trioblock message: {message!r}")
    return {"type": type(message).__name__, **message.to_map()}


def message_from_map(value: object) -> Message:
    """Validate a decoded CBOR value and turn it into a message, or raise ``ProtocolError``."""
    if not isinstance(value, dict):
        raise ProtocolError(f"a message must be a CBOR map, not {type(value).__name__}")
    kind = value.get("type")
    if not isinstance(kind, str):
        raise ProtocolError("a message needs a text 'type' field")
    decoder = DECODERS.get(kind)
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
