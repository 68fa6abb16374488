"""The messages of trioblock's wire protocol, and their CBOR map form.

Rules kept here:

- A message is a frozen dataclass; on the wire it is one CBOR map whose ``"type"`` key names
  it and whose other keys are its fields (see ``docs`` of each class). This module is pure:
  it turns messages into maps and maps back into messages, nothing else.
- :func:`message_from_map` trusts nothing. Every field is checked for presence and type
  (a hash is exactly 32 bytes, a header is ``"plain"`` or ``"compressed"``, a nonce is 32
  bytes, a node id is a short non-empty string…) and anything off raises
  :class:`~trioblock.errors.ProtocolError`. Keys a message does not know are ignored, so a
  newer peer may add optional fields without breaking older ones.
- Opaque maps (``Admin.request``, ``AdminReply.reply``) may hold only plain data: maps with
  string keys, lists, strings, bytes, integers, floats, booleans and null.
- Whether a message is followed by a streamed body is decided here too
  (:func:`has_body`): a :class:`PutBlock` always is; an :class:`Admin` or
  :class:`AdminReply` is when its ``with_body`` flag (``"body": true`` on the wire) is
  set, so operator requests can carry blocks larger than a message frame.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TypeAlias

from .._core.block import BlockHeader
from .._core.hashing import HASH_LEN, Hash
from ..errors import ProtocolError

__all__ = [
    "ERROR_KINDS",
    "NONCE_LEN",
    "PROTOCOL_VERSION",
    "Admin",
    "AdminReply",
    "Auth",
    "Error",
    "GetBlock",
    "Hello",
    "Message",
    "NeedBlockQuery",
    "NeedBlockReply",
    "Ok",
    "PutBlock",
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
#: Deepest nesting accepted in an opaque admin map.
MAX_OPAQUE_DEPTH: Final = 32

#: Error kinds a node sends; a peer may send others, which callers treat as generic failures.
ERROR_KINDS: Final = frozenset(
    {"missing", "corrupt", "refused", "internal", "protocol", "busy", "auth"}
)


@dataclass(frozen=True, slots=True)
class Hello:
    """First message of each side of the handshake: ``{version, node_id, nonce}``."""

    version: int
    node_id: str
    nonce: bytes


@dataclass(frozen=True, slots=True)
class Auth:
    """Second message of each side of the handshake: ``{proof}``, an HMAC-SHA256."""

    proof: bytes


@dataclass(frozen=True, slots=True)
class GetBlock:
    """Ask for a block: ``{hash, order_tag?}``; answered by :class:`PutBlock` or :class:`Error`.

    ``order_tag`` is an opaque ordering hint from the requester (Garage's order tag); it is
    passed to the handler unchanged.
    """

    hash: Hash
    order_tag: int | None = None


@dataclass(frozen=True, slots=True)
class PutBlock:
    """A block follows as a streamed body: ``{hash, header: "plain" | "compressed"}``.

    Sent by a client to store a block (answered by :class:`Ok` or :class:`Error`) and by a
    server to answer a :class:`GetBlock`.
    """

    hash: Hash
    header: BlockHeader


@dataclass(frozen=True, slots=True)
class NeedBlockQuery:
    """Ask whether the peer needs a block: ``{hash}``. Answered by :class:`NeedBlockReply`."""

    hash: Hash


@dataclass(frozen=True, slots=True)
class NeedBlockReply:
    """Answer to :class:`NeedBlockQuery`: ``{needed}``."""

    needed: bool


@dataclass(frozen=True, slots=True)
class Ok:
    """Success without a value: ``{}``."""


@dataclass(frozen=True, slots=True)
class Error:
    """A request failed: ``{kind, message}``; ``kind`` is usually one of :data:`ERROR_KINDS`."""

    kind: str
    message: str = ""


@dataclass(frozen=True, slots=True)
class Admin:
    """An operator request, opaque to the network layer: ``{request, body?}``.

    ``with_body`` (``"body": true`` on the wire, absent when false): a streamed body
    follows, e.g. the block of an operator's ``put``.
    """

    request: dict[str, Any] = field(default_factory=dict)
    with_body: bool = False


@dataclass(frozen=True, slots=True)
class AdminReply:
    """Answer to :class:`Admin`: ``{reply, body?}``; ``with_body`` as for :class:`Admin`."""

    reply: dict[str, Any] = field(default_factory=dict)
    with_body: bool = False


Message: TypeAlias = (
    Hello
    | Auth
    | GetBlock
    | PutBlock
    | NeedBlockQuery
    | NeedBlockReply
    | Ok
    | Error
    | Admin
    | AdminReply
)


def has_body(message: Message) -> bool:
    """Whether ``message`` is followed on the wire by a streamed body."""
    if isinstance(message, Admin | AdminReply):
        return message.with_body
    return isinstance(message, PutBlock)


# ---------------------------------------------------------------------------------------
# Encoding: message -> map


def message_to_map(message: Message) -> dict[str, Any]:
    """The CBOR map form of ``message``."""
    match message:
        case Hello(version, node_id, nonce):
            return {"type": "Hello", "version": version, "node_id": node_id, "nonce": nonce}
        case Auth(proof):
            return {"type": "Auth", "proof": proof}
        case GetBlock(hash, order_tag):
            out: dict[str, Any] = {"type": "GetBlock", "hash": bytes(hash)}
            if order_tag is not None:
                out["order_tag"] = order_tag
            return out
        case PutBlock(hash, header):
            return {"type": "PutBlock", "hash": bytes(hash), "header": header.value}
        case NeedBlockQuery(hash):
            return {"type": "NeedBlockQuery", "hash": bytes(hash)}
        case NeedBlockReply(needed):
            return {"type": "NeedBlockReply", "needed": needed}
        case Ok():
            return {"type": "Ok"}
        case Error(kind, text):
            return {"type": "Error", "kind": kind, "message": text}
        case Admin(request, with_body):
            admin: dict[str, Any] = {"type": "Admin", "request": request}
            if with_body:
                admin["body"] = True
            return admin
        case AdminReply(reply, with_body):
            answer: dict[str, Any] = {"type": "AdminReply", "reply": reply}
            if with_body:
                answer["body"] = True
            return answer
    raise TypeError(f"not a trioblock message: {message!r}")


# ---------------------------------------------------------------------------------------
# Decoding: map -> message, trusting nothing


def _get(m: Mapping[str, Any], key: str, kind: str) -> Any:
    try:
        return m[key]
    except KeyError:
        raise ProtocolError(f"{kind} message lacks the {key!r} field") from None


def _str(m: Mapping[str, Any], key: str, kind: str, *, max_len: int, empty: bool) -> str:
    value = _get(m, key, kind)
    if not isinstance(value, str):
        raise ProtocolError(f"{kind}.{key} must be a text string")
    if len(value) > max_len or (not empty and not value):
        raise ProtocolError(f"{kind}.{key} has a bad length ({len(value)})")
    return value


def _bytes(m: Mapping[str, Any], key: str, kind: str, length: int) -> bytes:
    value = _get(m, key, kind)
    if not isinstance(value, bytes) or len(value) != length:
        raise ProtocolError(f"{kind}.{key} must be {length} bytes")
    return value


def _int(value: Any, what: str) -> int:
    # bool is an int subclass in Python but a distinct type in CBOR: refuse it here.
    if not isinstance(value, int) or isinstance(value, bool):
        raise ProtocolError(f"{what} must be an integer")
    return value


def _hash(m: Mapping[str, Any], kind: str) -> Hash:
    return Hash(_bytes(m, "hash", kind, HASH_LEN))


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


def _opaque(m: Mapping[str, Any], key: str, kind: str) -> dict[str, Any]:
    value = _get(m, key, kind)
    if not isinstance(value, dict):
        raise ProtocolError(f"{kind}.{key} must be a map")
    _check_opaque(value)
    return value


def _decode_hello(m: Mapping[str, Any]) -> Hello:
    version = _int(_get(m, "version", "Hello"), "Hello.version")
    node_id = _str(m, "node_id", "Hello", max_len=MAX_NODE_ID_LEN, empty=False)
    return Hello(version, node_id, _bytes(m, "nonce", "Hello", NONCE_LEN))


def _decode_auth(m: Mapping[str, Any]) -> Auth:
    return Auth(_bytes(m, "proof", "Auth", PROOF_LEN))


def _decode_get_block(m: Mapping[str, Any]) -> GetBlock:
    tag = m.get("order_tag")
    if tag is not None:
        tag = _int(tag, "GetBlock.order_tag")
        if not -(2**63) <= tag < 2**64:
            raise ProtocolError("GetBlock.order_tag out of range")
    return GetBlock(_hash(m, "GetBlock"), tag)


def _decode_put_block(m: Mapping[str, Any]) -> PutBlock:
    header = _get(m, "header", "PutBlock")
    if header == "plain":
        parsed = BlockHeader.PLAIN
    elif header == "compressed":
        parsed = BlockHeader.COMPRESSED
    else:
        raise ProtocolError("PutBlock.header must be 'plain' or 'compressed'")
    return PutBlock(_hash(m, "PutBlock"), parsed)


def _decode_need_reply(m: Mapping[str, Any]) -> NeedBlockReply:
    needed = _get(m, "needed", "NeedBlockReply")
    if not isinstance(needed, bool):
        raise ProtocolError("NeedBlockReply.needed must be a boolean")
    return NeedBlockReply(needed)


def _body_flag(m: Mapping[str, Any], kind: str) -> bool:
    value = m.get("body", False)
    if not isinstance(value, bool):
        raise ProtocolError(f"{kind}.body must be a boolean")
    return value


def _decode_error(m: Mapping[str, Any]) -> Error:
    kind = _str(m, "kind", "Error", max_len=64, empty=False)
    text = _str(m, "message", "Error", max_len=MAX_ERROR_MESSAGE_LEN, empty=True)
    return Error(kind, text)


_DECODERS: Final[dict[str, Callable[[Mapping[str, Any]], Message]]] = {
    "Hello": _decode_hello,
    "Auth": _decode_auth,
    "GetBlock": _decode_get_block,
    "PutBlock": _decode_put_block,
    "NeedBlockQuery": lambda m: NeedBlockQuery(_hash(m, "NeedBlockQuery")),
    "NeedBlockReply": _decode_need_reply,
    "Ok": lambda m: Ok(),
    "Error": _decode_error,
    "Admin": lambda m: Admin(_opaque(m, "request", "Admin"), _body_flag(m, "Admin")),
    "AdminReply": lambda m: AdminReply(
        _opaque(m, "reply", "AdminReply"), _body_flag(m, "AdminReply")
    ),
}


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
