"""The messages of a session: the handshake, the generic replies and operator requests."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .fields import (
    read_bytes,
    read_int,
    read_opaque,
    read_str,
)
from .wire import (
    MAX_ERROR_MESSAGE_LEN,
    MAX_NODE_ID_LEN,
    NONCE_LEN,
    PROOF_LEN,
    Wire,
    read_body_flag,
    wire_message,
)

# -- handshake ---------------------------------------------------------------------------


@wire_message
@dataclass(frozen=True, slots=True)
class Hello(Wire):
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


@wire_message
@dataclass(frozen=True, slots=True)
class Auth(Wire):
    """Second message of each side of the handshake: ``{proof}``, an HMAC-SHA256."""

    proof: bytes

    def to_map(self) -> dict[str, Any]:
        return {"proof": self.proof}

    @classmethod
    def from_map(cls, m: Mapping[str, Any]) -> Auth:
        return cls(read_bytes(m, "proof", "Auth", PROOF_LEN, PROOF_LEN))


# -- generic replies ---------------------------------------------------------------------


@wire_message
@dataclass(frozen=True, slots=True)
class Ok(Wire):
    """Success without a value: ``{}``."""

    @classmethod
    def from_map(cls, m: Mapping[str, Any]) -> Ok:
        return cls()


@wire_message
@dataclass(frozen=True, slots=True)
class Error(Wire):
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


@wire_message
@dataclass(frozen=True, slots=True)
class Admin(Wire):
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
        return cls(read_opaque(m, "request", "Admin"), read_body_flag(m, "Admin"))


@wire_message
@dataclass(frozen=True, slots=True)
class AdminReply(Wire):
    """Answer to :class:`Admin`: ``{reply, body?}``; ``with_body`` as for :class:`Admin`."""

    reply: dict[str, Any] = field(default_factory=dict)
    with_body: bool = False

    def announces_body(self) -> bool:
        return self.with_body

    def to_map(self) -> dict[str, Any]:
        return {"reply": self.reply, **({"body": True} if self.with_body else {})}

    @classmethod
    def from_map(cls, m: Mapping[str, Any]) -> AdminReply:
        return cls(read_opaque(m, "reply", "AdminReply"), read_body_flag(m, "AdminReply"))


__all__ = ["Admin", "AdminReply", "Auth", "Error", "Hello", "Ok"]
