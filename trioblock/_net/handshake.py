"""Mutual authentication of a fresh connection, proving knowledge of the cluster secret.

The exchange (C = the side that connected, S = the side that accepted)::

    C -> S  Hello{version, node_id=c, nonce=Nc}
    S -> C  Hello{version, node_id=s, nonce=Ns}
    C -> S  Auth{proof = HMAC(secret, CTX ‖ "client" ‖ Nc ‖ Ns ‖ c ‖ s)}
    S -> C  Auth{proof = HMAC(secret, CTX ‖ "server" ‖ Ns ‖ Nc ‖ s ‖ c)}

with CTX = ``b"trioblock-auth-v1"``, HMAC-SHA256, and each node id length-prefixed so no
two different transcripts hash the same bytes.

Rules kept here:

- Fresh 32-byte nonces from both sides enter both proofs, so a recorded proof is useless
  on another connection (no replay).
- Each proof names its role and puts its sender's nonce and id first, so a proof the
  server produces can never pass as a client's proof, nor one from a parallel connection
  be reflected back (no reflection); a Hello echoing our own nonce is refused as well.
- The server proves itself only after the client has: an unauthenticated peer learns
  nothing it could not compute without the secret.
- Proofs are compared with ``hmac.compare_digest``.
- The client checks that the server's node id is the node it meant to reach.
- On failure the client raises :class:`~trioblock.errors.AuthenticationError` (or
  ``ProtocolError`` for a version mismatch, ``TransportError`` for a timeout or a broken
  connection). A peer that closes the connection during the exchange (a request cancelled
  while connecting) is a ``TransportError`` on both sides, not a protocol violation. The
  server tells the peer ``Error{kind: "auth"}``, raises, and the caller
  drops the connection: no request is ever read from an unauthenticated peer.
- Once both proofs are checked, message frames may grow from 64 KiB to
  ``MAX_AUTHENTICATED_MESSAGE_SIZE`` (1 MiB): unauthenticated peers never get more.
- The whole exchange must run under one deadline, which the caller sets (the RPC layer
  uses its handshake timeout, :data:`DEFAULT_HANDSHAKE_TIMEOUT` unless told otherwise).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import secrets
import struct
from typing import Final, Literal

from ..errors import AuthenticationError, ProtocolError, TransportError
from .channel import Channel
from .codec import MAX_AUTHENTICATED_MESSAGE_SIZE, ConnectionClosed, Event
from .messages import NONCE_LEN, PROTOCOL_VERSION, Auth, Error, Hello

__all__ = [
    "AUTH_CONTEXT",
    "DEFAULT_HANDSHAKE_TIMEOUT",
    "client_handshake",
    "compute_proof",
    "send_hello",
    "server_handshake",
]

#: Domain-separation prefix of every proof; bump it with any change to the transcript.
AUTH_CONTEXT: Final = b"trioblock-auth-v1"
#: Seconds allowed for a whole handshake unless the caller says otherwise.
DEFAULT_HANDSHAKE_TIMEOUT: Final = 10.0

_Role = Literal["client", "server"]


def _field(value: bytes) -> bytes:
    return struct.pack(">H", len(value)) + value


def compute_proof(
    secret: bytes,
    role: _Role,
    own_nonce: bytes,
    peer_nonce: bytes,
    own_id: str,
    peer_id: str,
) -> bytes:
    """HMAC-SHA256 proof that the sender, playing ``role``, knows ``secret``."""
    transcript = b"".join(
        [
            AUTH_CONTEXT,
            _field(role.encode()),
            _field(own_nonce),
            _field(peer_nonce),
            _field(own_id.encode()),
            _field(peer_id.encode()),
        ]
    )
    return hmac.new(secret, transcript, hashlib.sha256).digest()


def _unexpected(event: Event, step: str) -> ProtocolError:
    return ProtocolError(f"expected {step} during the handshake, got {type(event).__name__}")


def _check_hello(event: Event, own_nonce: bytes) -> Hello:
    if not isinstance(event, Hello):
        raise _unexpected(event, "Hello")
    if event.version != PROTOCOL_VERSION:
        raise ProtocolError(
            f"peer speaks protocol version {event.version}, this node {PROTOCOL_VERSION}"
        )
    if hmac.compare_digest(event.nonce, own_nonce):
        raise AuthenticationError("peer echoed our own nonce (reflection)")
    return event


async def _receive(channel: Channel, step: str) -> Event:
    event = await channel.receive_event()
    if isinstance(event, ConnectionClosed):
        who = "the peer" if channel.peer == "?" else channel.peer
        raise TransportError(f"{who} closed the connection during the handshake ({step})")
    return event


def _authenticated(channel: Channel, peer: str) -> None:
    channel.peer = peer
    channel.codec.max_message_size = MAX_AUTHENTICATED_MESSAGE_SIZE


def _raise_remote_error(event: Error) -> None:
    if event.kind == "auth":
        raise AuthenticationError(f"peer refused our credentials: {event.message}")
    raise ProtocolError(f"peer refused the handshake ({event.kind}): {event.message}")


async def send_hello(channel: Channel, node_id: str) -> bytes:
    """Open the handshake as ``node_id``: send our ``Hello`` with a fresh nonce (returned).
    The peer answers with its own ``Hello``, which names it, before any proof."""
    nonce = secrets.token_bytes(NONCE_LEN)
    await channel.send_message(Hello(PROTOCOL_VERSION, node_id, nonce))
    return nonce


async def client_handshake(
    channel: Channel,
    *,
    node_id: str,
    expected_peer: str,
    secret: bytes,
) -> None:
    """Authenticate a connection we opened to ``expected_peer``, and have it authenticate us."""
    nonce = await send_hello(channel, node_id)
    event = await _receive(channel, "waiting for Hello")
    if isinstance(event, Error):
        _raise_remote_error(event)
    hello = _check_hello(event, nonce)
    if hello.node_id != expected_peer:
        raise AuthenticationError(
            f"connected to {expected_peer!r} but the peer says it is {hello.node_id!r}"
        )
    proof = compute_proof(secret, "client", nonce, hello.nonce, node_id, hello.node_id)
    await channel.send_message(Auth(proof))
    event = await _receive(channel, "waiting for Auth")
    if isinstance(event, Error):
        _raise_remote_error(event)
    if not isinstance(event, Auth):
        raise _unexpected(event, "Auth")
    expected = compute_proof(secret, "server", hello.nonce, nonce, hello.node_id, node_id)
    if not hmac.compare_digest(event.proof, expected):
        raise AuthenticationError(f"{expected_peer} failed to prove the cluster secret")
    _authenticated(channel, expected_peer)


async def server_handshake(
    channel: Channel,
    *,
    node_id: str,
    secret: bytes,
) -> str:
    """Authenticate a connection we accepted; return the peer's proven node id."""
    nonce = secrets.token_bytes(NONCE_LEN)
    event = await _receive(channel, "waiting for Hello")
    try:
        hello = _check_hello(event, nonce)
    except ProtocolError as exc:
        await _tell(channel, Error("protocol", str(exc)))
        raise
    await channel.send_message(Hello(PROTOCOL_VERSION, node_id, nonce))
    event = await _receive(channel, "waiting for Auth")
    if not isinstance(event, Auth):
        raise _unexpected(event, "Auth")
    expected = compute_proof(secret, "client", hello.nonce, nonce, hello.node_id, node_id)
    if not hmac.compare_digest(event.proof, expected):
        await _tell(channel, Error("auth", "authentication failed"))
        raise AuthenticationError(
            f"peer claiming to be {hello.node_id!r} failed to prove the cluster secret"
        )
    proof = compute_proof(secret, "server", nonce, hello.nonce, node_id, hello.node_id)
    await channel.send_message(Auth(proof))
    _authenticated(channel, hello.node_id)
    return hello.node_id


async def _tell(channel: Channel, error: Error) -> None:
    """Best-effort notice to a peer we are about to drop."""
    with contextlib.suppress(TransportError):
        await channel.send_message(error)
