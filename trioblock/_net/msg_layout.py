"""The messages that compare and exchange cluster layout histories."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from ..errors import ProtocolError
from .fields import (
    read_bytes,
)
from .wire import (
    Wire,
    read_body_flag,
    wire_message,
)

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


@wire_message
@dataclass(frozen=True, slots=True)
class LayoutExchange(Wire):
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
        return cls(
            digest, read_body_flag(m, "LayoutExchange"), _read_addresses(m, "LayoutExchange")
        )


@wire_message
@dataclass(frozen=True, slots=True)
class LayoutExchangeReply(Wire):
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
            read_body_flag(m, "LayoutExchangeReply"),
            _read_addresses(m, "LayoutExchangeReply"),
        )


__all__ = [
    "LAYOUT_DIGEST_LEN",
    "LayoutExchange",
    "LayoutExchangeReply",
    "MAX_ADDRESSES",
    "MAX_ADDRESS_LEN",
]
